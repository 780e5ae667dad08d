import { setTimeout as sleep } from 'node:timers/promises';
import { Inject, Injectable } from '@nestjs/common';
import type { Redis } from 'ioredis';
import { InjectPinoLogger, PinoLogger } from 'nestjs-pino';
import { AiClient, DeadLetterQueue } from '@traffic-dam/ai-bridge';
import { withDeadline } from '@traffic-dam/dam';
import { GATEWAY_CONFIG, type GatewayConfig } from '../common/config/config';
import { INSTANCE_ID } from '../common/instance';
import { LifecycleService, type DrainMode } from '../common/lifecycle.service';
import { REDIS_COMMANDS } from '../common/redis/redis.module';
import { SessionCleanup } from './session-cleanup';
import { SessionRegistry } from './session-registry';
import { SessionRepository } from './session.repository';
/** How often the drain looks again at the sessions still busy. */
const POLL_MS = 100;
/** After the last session ended, how long its close handler (slot) and its Redis clean-up may take. */
const CLOSE_WAIT_MS = 2_000;

/**
 * Ends this instance's sessions when it shuts down, without losing an accepted question:
 * 1. at once: every session is marked draining in Redis, so no instance accepts a new question
 *    for it (503 draining) and the question in flight, if any, is the last one;
 * 2. after DRAIN_GRACE_MS: each session with nothing in flight ends with `expired: draining`;
 *    one with an answer running ends right after its done or error;
 * 3. at DRAIN_INFLIGHT_MS: answers still running are cut: dead-lettered (reason draining),
 *    the client gets `failed` code draining, then `expired: draining`.
 * Ending a session releases its dam slot through its connection's close handler, whatever the
 * transport; its Redis clean-up is waited for (bounded) before the instance leaves.
 */
@Injectable()
export class SessionDrainer {
  private readonly dlq: DeadLetterQueue;

  constructor(
    @Inject(GATEWAY_CONFIG) private readonly config: GatewayConfig,
    @Inject(INSTANCE_ID) private readonly instanceId: string,
    @Inject(REDIS_COMMANDS) redis: Redis,
    @InjectPinoLogger(SessionDrainer.name) private readonly logger: PinoLogger,
    private readonly sessions: SessionRepository,
    private readonly ai: AiClient,
    private readonly hub: SessionRegistry,
    private readonly cleanup: SessionCleanup,
    lifecycle: LifecycleService,
  ) {
    this.dlq = new DeadLetterQueue({ redis, questionStream: config.AI_QUESTION_STREAM });
    lifecycle.onDrain((mode) => this.drain(mode));
  }

  async drain(mode: DrainMode): Promise<void> {
    const hub = this.hub;
    const started = Date.now();
    const graceful = mode === 'graceful';
    const graceUntil = graceful ? started + this.config.DRAIN_GRACE_MS : started;
    const cutAt = graceful ? started + this.config.DRAIN_INFLIGHT_MS : started;
    this.logger.info({ sessions: hub.size, mode, graceMs: graceUntil - started, inflightLimitMs: cutAt - started }, 'draining');
    let inRedis = await this.mark(open(hub));
    let expired = 0;
    for (;;) {
      const now = Date.now();
      if (now >= graceUntil) {
        const ids = open(hub);
        if (ids.length === 0) break;
        // Asked again each round: an answer that ended freed its session's in-flight slot.
        if (now > graceUntil) inRedis = await this.mark(ids);
        for (const id of ids) {
          if (this.busy(hub, id, inRedis) === null) {
            hub.end(id, 'draining', 'draining');
            expired++;
          }
        }
      }
      if (Date.now() >= cutAt || open(hub).length === 0) break;
      await sleep(Math.max(1, Math.min(POLL_MS, (now < graceUntil ? graceUntil : cutAt) - now)));
    }
    const cut = await this.cut(hub, inRedis, started);
    const until = Date.now() + CLOSE_WAIT_MS;
    while (hub.size > 0 && Date.now() < until) await sleep(20);
    const cleaned = await this.cleanup.settled(Math.max(0, until - Date.now()));
    this.logger.info({ expired: expired + cut.sessions, cut: cut.answers, ms: Date.now() - started, left: hub.size, cleaned }, 'drained');
  }

  /** The question in flight on a session, as this instance or Redis knows it, or null. */
  private busy(hub: SessionRegistry, id: string, inRedis: Map<string, string | null> | null): string | null {
    return hub.get(id)?.inflight?.messageId ?? inRedis?.get(id) ?? null;
  }

  /** Marks sessions draining; null when Redis does not answer (the drain then goes by local state). */
  private async mark(ids: string[]): Promise<Map<string, string | null> | null> {
    try {
      return await withDeadline(this.sessions.markDraining(ids), 1_000);
    } catch (err) {
      this.logger.warn({ err: String(err) }, 'drain: sessions not marked in Redis');
      return null;
    }
  }

  /** The in-flight limit passed: the answers still running are dead-lettered, then every stream ends. */
  private async cut(
    hub: SessionRegistry,
    inRedis: Map<string, string | null> | null,
    started: number,
  ): Promise<{ sessions: number; answers: number }> {
    const ids = open(hub);
    const answers = new Map<string, { sessionId: string; tokens: number }>();
    for (const id of ids) {
      const messageId = this.busy(hub, id, inRedis);
      const inflight = hub.get(id)?.inflight;
      if (messageId !== null) answers.set(messageId, { sessionId: id, tokens: inflight?.messageId === messageId ? inflight.lastSeq + 1 : 0 });
    }
    if (answers.size > 0) {
      const message = 'the gateway shut down before the answer finished';
      let written: string[] = [];
      try {
        await Promise.all([...answers.keys()].map((m) => this.ai.cancel(m)));
        const tokens = new Map([...answers].map(([m, a]) => [m, a.tokens]));
        // Questions live on the stream from when they were accepted: at most one deadline back.
        const since = started - this.config.QUESTION_DEADLINE_MS - 5_000;
        written = await this.dlq.deadLetterByIds(tokens, 'draining', message, since, this.instanceId);
      } catch (err) {
        this.logger.error({ err: String(err), dlq: true }, 'drain: dead letters not written: Redis unavailable');
      }
      for (const [messageId, a] of answers) {
        const dlq = written.includes(messageId);
        this.logger.warn({ sessionId: a.sessionId, messageId, dlq, reason: 'draining' }, dlq ? 'dead-lettered' : 'answer cut, not dead-lettered');
        const detail = dlq ? 'it was dead-lettered and can be replayed' : 'it could not be dead-lettered';
        hub.emit(a.sessionId, 'failed', { messageId, code: 'draining', message: `The instance shut down before the answer finished; ${detail}.` });
      }
    }
    for (const id of ids) hub.end(id, 'draining', 'draining');
    return { sessions: ids.length, answers: answers.size };
  }
}

/** Sessions not yet ending (an ending one stays in the registry until its close handler ran). */
function open(hub: SessionRegistry): string[] {
  return hub.open().map((s) => s.record.sessionId);
}
