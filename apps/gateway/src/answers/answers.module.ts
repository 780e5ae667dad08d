import { Module } from '@nestjs/common';
import { AiModule } from '../ai/ai.module';
import { SessionsModule } from '../sessions/sessions.module';
import { AnswerRelay } from './answer-relay.service';

/** The answer relay: worker replies to session events, deadlines, lost answers. */
@Module({
  imports: [AiModule, SessionsModule],
  providers: [AnswerRelay],
  exports: [AnswerRelay],
})
export class AnswersModule {}
