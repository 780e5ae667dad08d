import { Module, type OnModuleInit } from '@nestjs/common';
import { AiModule } from '../ai/ai.module';
import { QuestionsModule } from '../questions/questions.module';
import { ControlChannel } from '../sessions/control-channel';
import { SessionsModule } from '../sessions/sessions.module';
import { SessionsService } from '../sessions/sessions.service';
import { TicketsModule } from '../tickets/tickets.module';
import { EdgeRelay } from '../resume/edge-relay';
import { RemoteSessions } from '../resume/remote-sessions';
import { ResumeTombstones } from '../resume/resume-tombstones';
import { ResumeRepository } from '../resume/resume.repository';
import { ResumeService } from '../resume/resume.service';
import { ChatController } from './chat.controller';
import { JsonBodyInterceptor } from './json-body.interceptor';
import { SsePinger } from './sse-connection';

/** The SSE transport: the HTTP routes of the chat contract over the session core, and resuming a stream (resume/). */
@Module({
  imports: [AiModule, SessionsModule, QuestionsModule, TicketsModule],
  controllers: [ChatController],
  providers: [SsePinger, JsonBodyInterceptor, ResumeRepository, ResumeService, ResumeTombstones, RemoteSessions, EdgeRelay],
})
export class SseModule implements OnModuleInit {
  constructor(
    private readonly sessions: SessionsService,
    private readonly control: ControlChannel,
  ) {}

  /** A DELETE that landed elsewhere reaches an SSE stream through the holding instance's control channel. */
  onModuleInit(): void {
    this.sessions.registerReach('sse', {
      closeRemote: async (owner, sessionId) => {
        await this.control.send(owner, { type: 'close', sessionId });
      },
    });
  }
}
