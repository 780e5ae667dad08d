import { Module } from '@nestjs/common';
import { AiModule } from '../ai/ai.module';
import { SessionsModule } from '../sessions/sessions.module';
import { AnswerRelay } from './answer-relay.service';
import { QueuedQuestions } from './queued-questions';

/** The answer relay: worker replies to session events, deadlines, lost answers. */
@Module({
  imports: [AiModule, SessionsModule],
  providers: [AnswerRelay, QueuedQuestions],
  exports: [AnswerRelay],
})
export class AnswersModule {}
