import { Module } from '@nestjs/common';
import { AiModule } from '../ai/ai.module';
import { QuestionsModule } from '../questions/questions.module';
import { SessionsModule } from '../sessions/sessions.module';
import { ChatGateway } from './chat.gateway';
import { SocketAdmission } from './socket-admission';

/** The Socket.IO transport: namespace /chat over the same session core and dam budget as SSE. */
@Module({
  imports: [AiModule, SessionsModule, QuestionsModule],
  providers: [ChatGateway, SocketAdmission],
})
export class SocketIoModule {}
