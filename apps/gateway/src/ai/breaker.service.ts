import { randomUUID } from 'node:crypto';
import { Inject, Injectable, type OnApplicationBootstrap, type OnModuleDestroy } from '@nestjs/common';
import type { Redis } from 'ioredis';
import { InjectPinoLogger, PinoLogger } from 'nestjs-pino';
import { lastValueFrom, last } from 'rxjs';
import { AI_PATTERNS, AiClient, type AskRequest, type Reply } from '@traffic-dam/ai-bridge';
import { CircuitBreaker, type BreakerState } from '@traffic-dam/dam';
import { GATEWAY_CONFIG, type GatewayConfig } from '../common/config/config';
import { DamModePolicy } from '../common/dam-mode.policy';
import { ErrorCode, GatewayException } from '../common/errors';
import { INSTANCE_ID } from '../common/instance';
import { REDIS_COMMANDS } from '../common/redis/redis.module';
import { MetricsService } from '../metrics/metrics.service';

/** Replies to breaker probes carry this session id; no client stream ever has it. */
export const PROBE_SESSION = 'breaker-probe';

const STATE_VALUE: Record<BreakerState, number> = { closed: 0, half_open: 1, open: 2 };

/** The cluster-wide circuit breaker toward the AI worker, as the gateway uses it. */
@Injectable()
export class BreakerService implements OnApplicationBootstrap, OnModuleDestroy {
  private readonly breaker: CircuitBreaker | null;

  constructor(
    @Inject(GATEWAY_CONFIG) private readonly config: GatewayConfig,
    @Inject(INSTANCE_ID) instanceId: string,
    @Inject(REDIS_COMMANDS) redis: Redis,
    @InjectPinoLogger(BreakerService.name) private readonly logger: PinoLogger,
    private readonly ai: AiClient,
    private readonly metrics: MetricsService,
    policy: DamModePolicy,
  ) {
    // The "before" server has no flow control at all.
    this.breaker = !policy.flowControl
      ? null
      : new CircuitBreaker({
          redis,
          instanceId,
          windowMs: config.DAM_BREAKER_WINDOW_MS,
          minVolume: config.DAM_BREAKER_MIN_VOLUME,
          errorRatio: config.DAM_BREAKER_ERROR_RATIO,
          openMs: config.DAM_BREAKER_OPEN_MS,
          pollMs: config.DAM_BREAKER_POLL_MS,
          probe: () => this.probe(),
          onTransition: (t) => {
            this.metrics.breakerTransitions.inc({ to: t.to, reason: t.reason });
            const line = { breaker: t };
            if (t.to === 'closed') this.logger.info(line, 'breaker closed: AI answers again');
            else this.logger.warn(line, `breaker ${t.to}`);
          },
        });
    metrics.registerBreakerCollector(() => STATE_VALUE[this.breaker?.current.state ?? 'closed']);
  }

  async onApplicationBootstrap(): Promise<void> {
    // Every outcome counts once, here, on the instance that received it, whoever watches the answer.
    this.ai.onReply((r) => {
      if (r.sessionId !== PROBE_SESSION) this.record(r);
    });
    await this.breaker?.start();
  }

  onModuleDestroy(): void {
    this.breaker?.stop();
  }

  get state(): BreakerState {
    return this.breaker?.current.state ?? 'closed';
  }

  /** Why it last opened: error_ratio, no_worker, or a failed probe's reason. */
  get reason(): string {
    return this.breaker?.current.reason ?? '';
  }

  /** Throws 503 ai_unavailable while the breaker is not closed. No Redis round trip. */
  assertClosed(): void {
    const refusal = this.refusal();
    if (refusal) throw refusal;
  }

  /** The refusal assertClosed() throws, counted, or null while the breaker is closed. */
  refusal(): GatewayException | null {
    const a = this.breaker?.allow();
    if (!a || a.allowed) return null;
    this.metrics.aiRefused.inc({ reason: `breaker_${a.state}` });
    return new GatewayException(ErrorCode.AiUnavailable, `The AI path is ${a.state === 'open' ? 'failing' : 'being probed'}; try again shortly.`, {
      retryAfterSec: Math.max(1, Math.ceil(a.retryAfterMs / 1000)),
    });
  }

  /** One answer's outcome, counted once, by the instance that relayed it. */
  record(reply: Reply): void {
    if (reply.type === 'done' && reply.usage) {
      this.metrics.aiTokens.inc({ model: reply.usage.model, kind: 'prompt' }, reply.usage.promptTokens);
      this.metrics.aiTokens.inc({ model: reply.usage.model, kind: 'completion' }, reply.usage.completionTokens);
    }
    if (!this.breaker || reply.type === 'token') return;
    if (reply.type === 'done') this.breaker.record('success');
    else if (reply.code === 'worker_error') this.breaker.record('failure');
    else if (reply.code === 'deadline_exceeded') this.breaker.record('timeout');
  }

  /** An answer that never came counts like a timeout. */
  recordTimeout(): void {
    this.breaker?.record('timeout');
  }

  noWorkerAlive(): void {
    void this.breaker?.trip('no_worker');
  }

  /** A real question through the real path, answered to this instance's own channel. */
  private async probe(): Promise<boolean> {
    const id = `probe-${randomUUID()}`;
    const timeoutMs = this.config.DAM_BREAKER_PROBE_TIMEOUT_MS;
    const request: AskRequest = {
      question: {
        id,
        sessionId: PROBE_SESSION,
        replyTo: this.ai.replyChannel,
        question: 'breaker probe: are you answering?',
        deadline: Date.now() + timeoutMs,
        attempt: 1,
        traceId: id,
      },
      timeoutMs,
    };
    // No answer in time, or a failed enqueue, is a failed probe.
    const ok = await lastValueFrom(this.ai.send<Reply, AskRequest>(AI_PATTERNS.ask, request).pipe(last())).then(
      (r) => r.type === 'done',
      () => false,
    );
    this.metrics.breakerProbes.inc({ ok: String(ok) });
    this.logger.info({ probe: id, ok }, 'breaker probe finished');
    return ok;
  }
}
