import { Module, type OnModuleInit } from '@nestjs/common';
import { AiModule } from '../ai/ai.module';
import { ControlChannel } from './control-channel';
import { DrainingGuard } from './draining.guard';
import { SessionCleanup } from './session-cleanup';
import { SessionDrainer } from './session-drain';
import { SessionKeeper } from './session-keeper';
import { SessionMetrics } from './session-metrics';
import { SessionRegistry } from './session-registry';
import { SessionRepository } from './session.repository';
import { SessionsService } from './sessions.service';
import { WaitingRoom } from './waiting-room';

/** The transport-neutral session core: open, close, expire, drain, and the clean-up behind them. */
@Module({
  imports: [AiModule],
  providers: [
    SessionsService,
    SessionRegistry,
    SessionRepository,
    SessionCleanup,
    SessionKeeper,
    SessionMetrics,
    SessionDrainer,
    ControlChannel,
    DrainingGuard,
    WaitingRoom,
  ],
  exports: [SessionsService, SessionRegistry, SessionRepository, SessionKeeper, ControlChannel, DrainingGuard],
})
export class SessionsModule implements OnModuleInit {
  constructor(
    private readonly sessions: SessionsService,
    private readonly control: ControlChannel,
  ) {}

  /** Another instance asks this one to end a session it holds (a DELETE that landed there). */
  onModuleInit(): void {
    this.control.on('close', (m) => this.sessions.end(m.sessionId, 'deleted'));
  }
}
