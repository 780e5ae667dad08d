import { Inject, Injectable, type OnApplicationBootstrap, type OnModuleDestroy } from '@nestjs/common';
import { InjectPinoLogger, PinoLogger } from 'nestjs-pino';
import { withDeadline } from '@traffic-dam/dam';
import { GATEWAY_CONFIG, type GatewayConfig } from '../common/config/config';
import type { AdaptiveDeadline } from '../common/redis/adaptive-deadline';
import { REQUEST_DEADLINE } from '../common/redis/redis.module';
import { SessionRegistry } from './session-registry';
import { SessionRepository } from './session.repository';

/**
 * The sessions' clocks, one timer each for all of them (no timer per session): idle and lifetime
 * expiry, the end of the resume window of a session whose client went away, and writing the
 * records of sessions opened while Redis was away.
 */
@Injectable()
export class SessionKeeper implements OnApplicationBootstrap, OnModuleDestroy {
  private expiryTimer: NodeJS.Timeout | null = null;
  private persistTimer: NodeJS.Timeout | null = null;

  constructor(
    @Inject(GATEWAY_CONFIG) private readonly config: GatewayConfig,
    @Inject(REQUEST_DEADLINE) private readonly deadline: AdaptiveDeadline,
    @InjectPinoLogger(SessionKeeper.name) private readonly logger: PinoLogger,
    private readonly registry: SessionRegistry,
    private readonly repository: SessionRepository,
  ) {}

  onApplicationBootstrap(): void {
    // Fine enough that a short test TTL is kept to ~1/4.
    const c = this.config;
    const shortest = Math.min(c.DAM_SESSION_IDLE_MS, c.DAM_SESSION_MAX_MS, c.QUESTION_DEADLINE_MS, c.SSE_RESUME_MS || Infinity);
    const sweepMs = Math.max(50, Math.min(1_000, Math.floor(shortest / 4)));
    this.expiryTimer = setInterval(() => {
      const now = Date.now();
      const n = this.registry.expire(now, c.DAM_SESSION_IDLE_MS);
      if (n > 0) this.logger.info({ expired: n }, 'sessions expired');
      // No client came back within the window: the session ends as if the drop had ended it.
      for (const s of this.registry.detachedBefore(now - c.SSE_RESUME_MS)) this.registry.end(s.record.sessionId, 'client');
    }, sweepMs);
    this.expiryTimer.unref();
    this.persistTimer = setInterval(() => void this.persistPending(), 1_000);
    this.persistTimer.unref();
  }

  onModuleDestroy(): void {
    if (this.expiryTimer) clearInterval(this.expiryTimer);
    if (this.persistTimer) clearInterval(this.persistTimer);
  }

  /** Writes a session that exists only here (opened while Redis was away); true if it did. Throws when Redis does not answer. */
  async persistIfLocal(sessionId: string): Promise<boolean> {
    const s = this.registry.get(sessionId);
    if (!s || s.persisted) return false;
    await this.deadline.run(this.repository.create(s.record));
    s.persisted = true;
    return true;
  }

  private async persistPending(): Promise<void> {
    for (const s of this.registry.all()) {
      if (s.persisted) continue;
      try {
        await withDeadline(this.repository.create(s.record), 500);
        s.persisted = true;
      } catch {
        return; // still away; the next tick tries again
      }
    }
  }
}
