import { setTimeout as sleep } from 'node:timers/promises';
import { Inject, Injectable, type OnModuleInit } from '@nestjs/common';
import { InjectPinoLogger, PinoLogger } from 'nestjs-pino';
import { GATEWAY_CONFIG, type GatewayConfig } from '../common/config/config';
import { LifecycleService } from '../common/lifecycle.service';
import { SessionRegistry } from '../sessions/session-registry';
import { SessionsService } from '../sessions/sessions.service';
import { ResumeRepository } from './resume.repository';

const RETRY_MS = 250;

/**
 * Marks the resume entry of every session that ends with why it ended, so that a reconnect for
 * it, on any instance, is answered at once: 204 (EventSource stops), or a new session after a
 * drain. The ends of one turn go in one pipeline, tried twice. Lost, the entry still leads to
 * the session's instance, which no longer has it: 204 all the same, only a drained session's
 * client then has to open a new stream itself. A draining instance leaves only once the
 * tombstones of all its sessions are written (`draining`: their clients get new sessions).
 */
@Injectable()
export class ResumeTombstones implements OnModuleInit {
  private queue: Array<{ handleHash: string; reason: string }> = [];
  private scheduled = false;
  private flushing: Promise<void> | null = null;

  constructor(
    @Inject(GATEWAY_CONFIG) config: GatewayConfig,
    @InjectPinoLogger(ResumeTombstones.name) private readonly logger: PinoLogger,
    private readonly sessions: SessionsService,
    private readonly repository: ResumeRepository,
    private readonly registry: SessionRegistry,
    lifecycle: LifecycleService,
  ) {
    lifecycle.onDrain((mode) => this.drained(mode === 'graceful' ? config.DRAIN_INFLIGHT_MS + 3_000 : 3_000));
  }

  onModuleInit(): void {
    this.sessions.onEnded((s, reason) => {
      if (!s.record.resumeHash) return;
      this.queue.push({ handleHash: s.record.resumeHash, reason });
      if (this.scheduled) return;
      this.scheduled = true;
      setImmediate(() => {
        this.flushing = this.flush().finally(() => {
          this.flushing = null;
        });
      });
    });
  }

  /** Resolves once every session here ended and its tombstone went out (or `boundMs` passed). */
  private async drained(boundMs: number): Promise<void> {
    const until = Date.now() + boundMs;
    while ((this.registry.size > 0 || this.scheduled || this.flushing) && Date.now() < until) {
      if (this.flushing) await this.flushing;
      else await sleep(20);
    }
  }

  private async flush(): Promise<void> {
    this.scheduled = false;
    const batch = this.queue.splice(0, this.queue.length);
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        await this.repository.tombstone(batch);
        return;
      } catch (err) {
        if (attempt === 0) await new Promise((r) => setTimeout(r, RETRY_MS));
        else this.logger.warn({ err: String(err), sessions: batch.length }, 'resume tombstones not written; those reconnects get 204 from the sessions\' instance');
      }
    }
  }
}
