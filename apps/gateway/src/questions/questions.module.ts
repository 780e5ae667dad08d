import { Module } from '@nestjs/common';
import { AiModule } from '../ai/ai.module';
import { AnswersModule } from '../answers/answers.module';
import { SessionsModule } from '../sessions/sessions.module';
import { QuestionClaims } from './question-claims';
import { QuestionsService } from './questions.service';

/** Asking a question on a session, whatever transport asks. */
@Module({
  imports: [AiModule, SessionsModule, AnswersModule],
  providers: [QuestionsService, QuestionClaims],
  exports: [QuestionsService],
})
export class QuestionsModule {}
