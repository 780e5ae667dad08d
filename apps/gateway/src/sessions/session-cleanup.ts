import { setTimeout as sleep } from 'node:timers/promises';
import { Inject, Injectable, type OnApplicationShutdown } from '@nestjs/common';
import { InjectPinoLogger, PinoLogger } from 'nestjs-pino';
import { AiClient } from '@traffic-dam/ai-bridge';
import { GATEWAY_CONFIG, type GatewayConfig } from '../common/config/config';
import { SessionMetrics } from './session-metrics';
import { SessionRepository } from './session.repository';

/** Most sessions removed in one pipeline. */
const BATCH = 500;
/** Retry backoff while Redis does not confirm, in ms: short, so clean-up lands right after Redis is back. */
const RETRY_MIN_MS = 50;
const RETRY_MAX_MS = 250;

/**
 * What closing a session leaves to do in Redis: delete its record and its in-flight claim, and
 * cancel the question that claim held. Closing is idempotent, so each close is retried until
 * Redis confirms it; a slow reply is not a failure, and nothing here has a deadline of its own.
 * The closes of one turn of the event loop go in one pipeline. A close is given up only when the
 * record has expired by its TTL anyway.
 */
@Injectable()
export class SessionCleanup implements OnApplicationShutdown {
  /** sessionId -> until when it is worth removing (the record's expiry). */
  private readonly removals = new Map<string, number>();
  /** messageId -> until when it is worth cancelling. */
  private readonly cancels = new Map<string, number>();
  private cancelScheduled: (() => void) | null = null;
  private running = false;
  private backoffMs = RETRY_MIN_MS;
  private failingSince: number | null = null;
  private stopped = false;

  constructor(
    @Inject(GATEWAY_CONFIG) private readonly config: GatewayConfig,
    @InjectPinoLogger(SessionCleanup.name) private readonly logger: PinoLogger,
    private readonly sessions: SessionRepository,
    private readonly ai: AiClient,
    private readonly metrics: SessionMetrics,
  ) {}

  /** Closes a session in Redis: record and claim gone, its question cancelled. */
  close(sessionId: string, expiresAt: number): void {
    this.removals.set(sessionId, expiresAt);
    this.schedule(0);
  }

  /** Cancels a question (its claim is gone or will be), retried like a removal. */
  cancel(messageId: string): void {
    this.cancels.set(messageId, Date.now() + this.config.QUESTION_DEADLINE_MS + 5_000);
    this.schedule(0);
  }

  /** Closes and cancels not yet confirmed by Redis. */
  get pending(): number {
    return this.removals.size + this.cancels.size;
  }

  /** Resolves true once nothing is pending, or false after timeoutMs. */
  async settled(timeoutMs: number): Promise<boolean> {
    const until = Date.now() + timeoutMs;
    while (this.pending > 0 || this.running) {
      if (Date.now() >= until) return false;
      await sleep(20);
    }
    return true;
  }

  /** After the drain (which waits for this clean-up): what is left goes to the records' TTL. */
  onApplicationShutdown(): void {
    this.stopped = true;
    this.cancelScheduled?.();
    if (this.pending > 0) this.logger.warn({ pending: this.pending }, 'session clean-up left to the records\' TTL at shutdown');
  }

  private schedule(ms: number): void {
    if (this.cancelScheduled || this.running || this.stopped) return;
    const fire = (): void => {
      this.cancelScheduled = null;
      void this.run();
    };
    // 0: after this turn, so the closes of one burst share a round trip.
    if (ms === 0) {
      const t = setImmediate(fire);
      this.cancelScheduled = () => clearImmediate(t);
    } else {
      const t = setTimeout(fire, ms);
      this.cancelScheduled = () => clearTimeout(t);
    }
  }

  private async run(): Promise<void> {
    this.running = true;
    const now = Date.now();
    for (const [id, until] of this.removals) {
      if (until > now) continue;
      this.removals.delete(id);
    }
    for (const [id, until] of this.cancels) if (until <= now) this.cancels.delete(id);
    let confirmed = true;
    try {
      const ids = [...this.removals.keys()].slice(0, BATCH);
      if (ids.length > 0) {
        const results = await this.sessions.removeMany(ids);
        results.forEach((r, i) => {
          if ('err' in r) {
            confirmed = false;
            return;
          }
          const id = ids[i] as string;
          this.removals.delete(id);
          if (r.inflight) this.cancels.set(r.inflight, now + this.config.QUESTION_DEADLINE_MS + 5_000);
        });
      }
      const cancels = [...this.cancels.keys()].slice(0, BATCH);
      const done = await Promise.allSettled(cancels.map((id) => this.ai.cancel(id)));
      done.forEach((d, i) => {
        if (d.status === 'fulfilled') this.cancels.delete(cancels[i] as string);
        else confirmed = false;
      });
    } catch {
      confirmed = false;
    }
    this.running = false;
    this.settle(confirmed);
    if (this.pending > 0) this.schedule(confirmed ? 0 : this.backoffMs);
  }

  private settle(confirmed: boolean): void {
    if (confirmed) {
      this.backoffMs = RETRY_MIN_MS;
      if (this.failingSince !== null) {
        this.logger.info({ afterMs: Date.now() - this.failingSince, pending: this.pending }, 'session clean-up confirmed by Redis again');
        this.failingSince = null;
      }
      return;
    }
    this.metrics.cleanupFailures.inc();
    this.backoffMs = Math.min(this.backoffMs * 2, RETRY_MAX_MS);
    if (this.failingSince === null) {
      this.failingSince = Date.now();
      // One line per outage, not one per session: the retries are counted in a metric.
      this.logger.warn({ pending: this.pending }, 'session clean-up not confirmed by Redis; retrying until it is');
    }
  }
}
