import { Inject, Injectable, type OnApplicationBootstrap, type OnModuleDestroy } from '@nestjs/common';
import { InjectPinoLogger, PinoLogger } from 'nestjs-pino';
import { AiClient, type AskResult, type EnqueueRequest, type Question } from '@traffic-dam/ai-bridge';
import { GATEWAY_CONFIG, type GatewayConfig } from '../common/config/config';
import { DamModePolicy } from '../common/dam-mode.policy';
import { ErrorCode, GatewayException, RefusalCache } from '../common/errors';
import { DamService } from '../dam/dam.service';
import { MetricsService } from '../metrics/metrics.service';
import { BreakerService } from './breaker.service';
import { KnownOverload } from './known-overload';
import { NO_WORKERS, ThroughputLearner, aiRetryAfterSec, extraWaitMs, type ThroughputView } from './throughput';
import { WaitOvershoot } from './wait-overshoot';

/** Questions queued here whose first token is awaited for the overshoot (see wait-overshoot.ts); more are not sampled. */
const AWAITED_MAX = 20_000;

/**
 * The AI-capacity gate: a question enters the global queue only if its estimated wait (questions
 * ahead of it / the throughput learned from the workers' heartbeats, see throughput.ts, plus any
 * wait before an answer can start at all) fits DAM_MAX_QUEUE_WAIT_MS; with no live worker it is
 * refused at once. A refusal's Retry-After grows with the sessions competing for the AI (see throughput.ts).
 * While its last refusal proves the line is still too long, a question is refused without asking
 * Redis (see known-overload.ts). Every estimate carries the p95 of how much later than estimated
 * the first tokens of admitted questions came (see wait-overshoot.ts), so it is the p95 wait of
 * what it admits that fits the limit. Worker heartbeats are read on one timer, never per request.
 */
@Injectable()
export class AiCapacityService implements OnApplicationBootstrap, OnModuleDestroy {
  private view: ThroughputView = NO_WORKERS;
  private readonly learner = new ThroughputLearner();
  private lastDepth = 0;
  private lastWaitMs = 0;
  private refreshed = false;
  private readonly known = new KnownOverload();
  private readonly overshoot = new WaitOvershoot();
  private readonly refusals = new RefusalCache();
  /** Queued here, first token not seen yet: when it was sent and the wait the gate estimated. */
  private readonly awaited = new Map<string, { sentAt: number; waitMs: number }>();
  private timer: NodeJS.Timeout | null = null;

  constructor(
    @Inject(GATEWAY_CONFIG) private readonly config: GatewayConfig,
    @InjectPinoLogger(AiCapacityService.name) private readonly logger: PinoLogger,
    private readonly ai: AiClient,
    private readonly metrics: MetricsService,
    private readonly breaker: BreakerService,
    private readonly dam: DamService,
    private readonly policy: DamModePolicy,
  ) {
    metrics.registerAiCollector(() => ({ ...this.view, depth: this.lastDepth, waitMs: this.lastWaitMs, marginMs: this.overshoot.marginMs(this.config.DAM_MAX_QUEUE_WAIT_MS) }));
  }

  async onApplicationBootstrap(): Promise<void> {
    // The first token of a question queued here, if this instance holds its session: one sample of
    // how much later than estimated it came. Questions whose session is elsewhere leave by age.
    this.ai.onReply((r) => {
      const a = this.awaited.get(r.messageId);
      if (a === undefined) return;
      this.awaited.delete(r.messageId);
      if (r.type === 'token') this.overshoot.observe(Date.now() - a.sentAt, a.waitMs);
    });
    await this.refresh();
    this.timer = setInterval(() => void this.refresh(), this.config.AI_WORKER_REFRESH_MS);
    this.timer.unref();
  }

  onModuleDestroy(): void {
    if (this.timer) clearInterval(this.timer);
  }

  get snapshot(): ThroughputView {
    return this.view;
  }

  /**
   * Enqueues the question if its estimated wait fits limitMs (DAM_MAX_QUEUE_WAIT_MS, or the wait a
   * waiting client offered, less the room kept for higher tiers); throws 503 ai_unavailable /
   * ai_overloaded otherwise. Returns where it stood: the questions ahead and the line's counter.
   */
  async enqueue(question: Question, limitMs: number = this.config.DAM_MAX_QUEUE_WAIT_MS): Promise<AskResult> {
    if (!this.policy.flowControl) {
      // The "before" server: straight onto the queue, however deep.
      return this.send({ question });
    }
    this.breaker.assertClosed();
    if (this.refreshed && this.view.liveWorkers === 0) {
      this.metrics.aiRefused.inc({ reason: 'no_worker' });
      throw new GatewayException(ErrorCode.AiUnavailable, 'No AI worker is alive.', { retryAfterSec: 2 });
    }
    const sentAt = Date.now();
    const view = this.view;
    const marginMs = this.overshoot.marginMs(limitMs);
    const r = await this.send({
      question,
      // 0: no gate (DAM_MAX_QUEUE_WAIT_MS=0).
      gate: {
        maxWaitMs: limitMs,
        throughputPerSec: view.rate,
        answering: view.answering,
        extraWaitMs: extraWaitMs(view, sentAt) + marginMs,
      },
    });
    this.lastDepth = r.depth;
    this.lastWaitMs = r.waitMs;
    // What the line proves is kept only if the gate's inputs have not changed since (see refresh()).
    const reading = { waitMs: r.waitMs, gateRate: view.rate, maxRate: view.advertised };
    if (r.status === 'queued') {
      if (r.waitMs >= 0 && this.awaited.size < AWAITED_MAX) this.awaited.set(question.id, { sentAt, waitMs: r.waitMs - marginMs });
      if (sameGateInputs(view, this.view)) this.known.queued(sentAt, reading);
      else this.known.forget();
      return r;
    }
    // Only what the line's length proves: a refusal because its oldest entry waited too long proves
    // nothing about the next (once that entry starts, the next may have come much later).
    if (sameGateInputs(view, this.view)) this.known.refused(sentAt, { ...reading, waitMs: r.rateWaitMs });
    throw this.overloaded(r.waitMs, 'overloaded', limitMs);
  }

  /**
   * Throws 503 ai_overloaded, without touching Redis, while the gate's last refusal proves that
   * this question would be refused too. Cheap enough to run before anything else a question costs.
   */
  refuseIfKnownOverloaded(limitMs: number = this.config.DAM_MAX_QUEUE_WAIT_MS): void {
    const refusal = this.knownOverloadRefusal(limitMs);
    if (refusal) throw refusal;
  }

  /** The refusal refuseIfKnownOverloaded() throws, counted, or null: for a caller that answers it without a throw. */
  knownOverloadRefusal(limitMs: number = this.config.DAM_MAX_QUEUE_WAIT_MS): GatewayException | null {
    if (!this.policy.flowControl || limitMs <= 0) return null;
    const waitMs = this.known.overloadedAt(Date.now(), limitMs);
    return waitMs === null ? null : this.overloaded(waitMs, 'overloaded_known', limitMs);
  }

  /** Whether refuseIfKnownOverloaded(limitMs) would throw now; counts nothing. */
  knownOverloaded(limitMs: number = this.config.DAM_MAX_QUEUE_WAIT_MS): boolean {
    return this.policy.flowControl && limitMs > 0 && this.known.overloadedAt(Date.now(), limitMs) !== null;
  }

  private overloaded(waitMs: number, reason: 'overloaded' | 'overloaded_known', limitMs: number): GatewayException {
    this.metrics.aiRefused.series({ reason }).inc();
    return this.refusals.of(
      ErrorCode.AiOverloaded,
      waitMs < 0
        ? 'The AI queue is not draining; try again shortly.'
        : `Estimated wait ${(waitMs / 1000).toFixed(1)} s is over the ${(limitMs / 1000).toFixed(1)} s limit.`,
      {
        retryAfterSec: aiRetryAfterSec({
          waitMs,
          contenders: Math.max(0, this.dam.sessionsHeld - this.view.answering),
          rate: this.view.rate,
          notBeforeMs: Math.max(0, this.view.throttledUntil - Date.now()),
        }),
      },
    );
  }

  private send(req: EnqueueRequest): Promise<AskResult> {
    return this.ai.enqueue(req);
  }

  private async refresh(): Promise<void> {
    const old = Date.now() - this.config.QUESTION_DEADLINE_MS - this.config.DAM_QUEUE_MAX_WAIT_MS;
    for (const [id, a] of this.awaited) {
      if (a.sentAt >= old) break; // in the order they were sent
      this.awaited.delete(id);
    }
    try {
      const workers = await this.ai.liveWorkers();
      const previous = this.view;
      const before = previous.liveWorkers;
      this.view = this.learner.update(workers, Date.now());
      // A refusal proves the line too long only for the inputs the gate was given: another rate or
      // other answers in progress may put the same line under the limit.
      if (!sameGateInputs(previous, this.view)) this.known.forget();
      this.refreshed = true;
      if (this.view.liveWorkers === 0) this.breaker.noWorkerAlive();
      if (before > 0 && this.view.liveWorkers === 0) this.logger.warn('no AI worker heartbeat is alive');
      if (before === 0 && this.view.liveWorkers > 0) this.logger.info({ workers: this.view.liveWorkers }, 'AI workers alive');
    } catch (err) {
      // Redis away: keep the last view; the dam's fallback reports the outage.
      this.logger.debug({ err: String(err) }, 'worker heartbeat refresh failed');
    }
  }
}

/** Whether two views give the AI gate the same inputs (the rate it divides by, the answers in progress it subtracts, the wait it adds). */
function sameGateInputs(a: ThroughputView, b: ThroughputView): boolean {
  return a.rate === b.rate && a.answering === b.answering && a.throttledUntil === b.throttledUntil && a.ttftExcessMs === b.ttftExcessMs;
}
