import { Inject, Injectable } from '@nestjs/common';
import { Counter, Gauge } from 'prom-client';
import { INSTANCE_ID } from '../common/instance';
import type { AdaptiveDeadline } from '../common/redis/adaptive-deadline';
import { RedisFailures } from '../common/redis/redis-failures';
import { REQUEST_DEADLINE } from '../common/redis/redis.module';
import { MetricsService } from '../metrics/metrics.service';
import { SessionRegistry } from '../sessions/session-registry';
import { SessionsService } from '../sessions/sessions.service';
import type { SseConnection } from '../sse/sse-connection';
import { EdgeRelay } from './edge-relay';
import { hashHandle, type ResumePoint } from './resume-id';
import { ResumeRepository, type ResumeEntry } from './resume.repository';

/** What a reconnect with a Last-Event-ID of ours gets. */
export type ResumeOutcome =
  /** The same session, with the events it missed; the connection is live. */
  | { kind: 'resumed' }
  /** The session is over: answer 204, which stops EventSource. */
  | { kind: 'ended' }
  /** Its instance drained: a new session, for the identity the old one had. */
  | { kind: 'new'; userId: string | null };

type Outcome = 'local' | 'remote' | 'ended' | 'unknown' | 'gap' | 'unreachable' | 'drained';

/**
 * A reconnect that names the last event it has: back to the same session wherever it landed.
 * On the session's own instance the connection goes on the session; on another, this instance
 * becomes its edge (EdgeRelay). A session that ended, is unknown, cannot be reached, or whose
 * missed events are no longer all kept, is over (204); one whose instance drained gets a new one.
 */
@Injectable()
export class ResumeService {
  private readonly outcomes: Counter<'outcome'>;

  constructor(
    @Inject(INSTANCE_ID) private readonly instanceId: string,
    @Inject(REQUEST_DEADLINE) private readonly deadline: AdaptiveDeadline,
    private readonly repository: ResumeRepository,
    private readonly sessions: SessionsService,
    private readonly edges: EdgeRelay,
    private readonly failures: RedisFailures,
    metrics: MetricsService,
    registry: SessionRegistry,
  ) {
    new Gauge({
      name: 'td_sse_sessions_waiting',
      help: 'Sessions whose stream dropped, waiting (SSE_RESUME_MS) for their client to resume; each still holds its slot',
      registers: [metrics.registry],
      collect() {
        this.set(registry.detachedBefore(Infinity).length);
      },
    });
    this.outcomes = new Counter({
      name: 'td_sse_resumes_total',
      help: 'Reconnects with a Last-Event-ID, by outcome: local/remote (resumed here, or as the edge of another instance), drained (a new session), ended/unknown/gap/unreachable (204)',
      labelNames: ['outcome'],
      registers: [metrics.registry],
    });
  }

  async resume(point: ResumePoint, conn: SseConnection): Promise<ResumeOutcome> {
    const hash = hashHandle(point.handle);
    const entry = await this.lookup(hash);
    const early = this.byEntry(entry);
    if (early) return early;
    const e = entry as ResumeEntry;
    const r = e.home === this.instanceId ? this.sessions.attach(e.sessionId, conn, point.after) : await this.edges.attach(e.home, e.sessionId, point.after, point.handle, conn);
    if (r === 'ok') return this.count(e.home === this.instanceId ? 'local' : 'remote', { kind: 'resumed' });
    if (r === 'gone') {
      // It may have just ended, its tombstone on the way: ask once more why.
      const again = this.byEntry(await this.lookup(hash).catch(() => null));
      if (again) return again;
      return this.count('ended', { kind: 'ended' });
    }
    return this.count(r, { kind: 'ended' });
  }

  private lookup(hash: string): Promise<ResumeEntry | null> {
    return this.deadline.run(this.repository.lookup(hash)).catch((err: unknown) => Promise.reject(this.failures.refusal('resume', err)));
  }

  private byEntry(entry: ResumeEntry | null): ResumeOutcome | null {
    if (!entry) return this.count('unknown', { kind: 'ended' });
    if (entry.ended === 'draining') return this.count('drained', { kind: 'new', userId: entry.userId });
    if (entry.ended) return this.count('ended', { kind: 'ended' });
    return null;
  }

  private count<T>(outcome: Outcome, r: T): T {
    this.outcomes.inc({ outcome });
    return r;
  }
}
