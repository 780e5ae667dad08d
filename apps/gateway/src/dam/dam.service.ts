import { createSecretKey } from 'node:crypto';
import { Inject, Injectable, type OnApplicationBootstrap, type OnApplicationShutdown } from '@nestjs/common';
import type { Redis } from 'ioredis';
import { InjectPinoLogger, PinoLogger } from 'nestjs-pino';
import {
  Dam,
  UserRateLimiter,
  type DamEvent,
  type DamStatus,
  type Lease,
  type RateDecision,
  type RedisErrorKind,
  type Waiter,
} from '@traffic-dam/dam';
import { GATEWAY_CONFIG, type GatewayConfig } from '../common/config/config';
import { DamModePolicy } from '../common/dam-mode.policy';
import { ErrorCode, GatewayException, type RateLimitInfo } from '../common/errors';
import { MetricsService } from '../metrics/metrics.service';
import type { CountSeries, HistogramSeries } from '../metrics/tally';
import { DamRefusals } from './dam-refusals';
import { resolveUser, verifyBearerJwt, type Credentials, type IdentityOptions, type VerifiedIdentity } from './identity';
import { queuedAdmission, type QueuedAdmission } from './queued-admission';
import { Tiers } from './tiers';

export const DAM = Symbol('DAM');
export const USER_RATE = Symbol('USER_RATE');
export const ADMISSION_REDIS = Symbol('ADMISSION_REDIS');

export interface Admission {
  lease: Lease;
  userId: string | null;
  /** The session's priority tier (DAM_TIERS), or null without tiers. */
  tier: string | null;
}

export type { QueuedAdmission } from './queued-admission';

/** The dam as the session core sees it: identity, admission, refusals as domain errors, metrics, logs. */
@Injectable()
export class DamService implements OnApplicationBootstrap, OnApplicationShutdown {
  private readonly identity: IdentityOptions;
  private readonly refusals: DamRefusals;
  // Held: the refusal at the ceiling is the one counted most under overload.
  private readonly atCeilingDecided: HistogramSeries;
  private readonly atCeilingRefused: CountSeries;
  readonly tiers: Tiers;

  constructor(
    @Inject(GATEWAY_CONFIG) private readonly config: GatewayConfig,
    @Inject(DAM) private readonly dam: Dam,
    @Inject(USER_RATE) private readonly userRate: UserRateLimiter | null,
    @Inject(ADMISSION_REDIS) private readonly admissionRedis: Redis,
    @InjectPinoLogger(DamService.name) private readonly logger: PinoLogger,
    private readonly metrics: MetricsService,
    private readonly policy: DamModePolicy,
  ) {
    this.identity = {
      jwtSecret: config.AUTH_JWT_SECRET === undefined ? undefined : createSecretKey(Buffer.from(config.AUTH_JWT_SECRET, 'utf8')),
      jwtRequired: config.AUTH_JWT_REQUIRED ?? config.AUTH_JWT_SECRET !== undefined,
      jwtIssuer: config.AUTH_JWT_ISSUER,
      jwtAudience: config.AUTH_JWT_AUDIENCE,
      limitByIp: config.DAM_LIMIT_BY_IP,
    };
    this.tiers = new Tiers(config.DAM_TIERS);
    this.refusals = new DamRefusals(config.DAM_USER_MAX_SESSIONS);
    metrics.registerDamCollector(() => this.dam.snapshot());
    this.atCeilingDecided = metrics.damAdmitDuration.series({ outcome: 'instance_full' });
    this.atCeilingRefused = metrics.damRefused.series({ reason: 'instance_full' });
  }

  async onApplicationBootstrap(): Promise<void> {
    await this.dam.start();
  }

  async onApplicationShutdown(): Promise<void> {
    await this.dam.stop();
    this.admissionRedis.disconnect();
  }

  /** Handles the dam's state changes: one log line and one count each. */
  onEvent(e: DamEvent): void {
    this.metrics.damEvents.inc({ type: e.type });
    switch (e.type) {
      case 'fallback_entered':
        this.logger.warn({ dam: e }, 'dam: Redis unreachable, deciding on the local share');
        return;
      case 'fallback_left':
        this.logger.info({ dam: e }, 'dam: Redis back, counts reconciled');
        return;
      case 'fenced':
        this.logger.warn({ dam: e }, 'dam: this instance was presumed dead; re-registered with its true count');
        return;
      case 'registered':
        this.logger.info({ dam: e }, 'dam: registered in the global budget');
        return;
      case 'heartbeat_failed':
        this.logger.debug({ dam: e }, 'dam: heartbeat failed');
        return;
    }
  }

  /**
   * Sessions held cluster-wide as of this instance's last word from Redis (an admit or a beat),
   * or this instance's own count before the first one or while Redis is away.
   */
  get sessionsHeld(): number {
    const s = this.dam.snapshot();
    return s.global && !s.fallback ? s.global.used : s.held;
  }

  /** Why Redis fails this instance's heartbeat, while it does (then the dam decides locally); else null. */
  get redisFailure(): RedisErrorKind | null {
    const s = this.dam.snapshot();
    return s.fallback ? s.fallbackReason : null;
  }

  /** Whether users are verified by JWT (AUTH_JWT_SECRET); stream tickets exist only then. */
  get verifiesJwt(): boolean {
    return this.identity.jwtSecret !== undefined;
  }

  /** The identity of `Authorization: Bearer <jwt>`; throws missing_token / invalid_credentials. */
  verifyJwt(authorization: string | undefined): VerifiedIdentity {
    const secret = this.identity.jwtSecret;
    if (secret === undefined) throw new Error('no JWT secret configured');
    if (authorization === undefined) throw new GatewayException(ErrorCode.MissingToken, 'Send a JWT as "Authorization: Bearer <jwt>".');
    return verifyBearerJwt(authorization, { ...this.identity, jwtSecret: secret });
  }

  /**
   * Admits a new session (any transport) or throws the refusal (dam_full, user_session_limit,
   * redis_unavailable). With waitMs > 0 a full budget puts it in the line instead: the result is
   * then a QueuedAdmission whose `admission` settles once a slot is handed to it (or rejects with
   * the refusal when its wait ends without one).
   */
  async admit(credentials: Credentials, waitMs = 0): Promise<Admission | QueuedAdmission> {
    const user = resolveUser(credentials, this.identity);
    const { userId } = user;
    const tier = this.tiers.of(user.verified);
    if (!this.policy.flowControl) {
      const r = await this.dam.admit(userId, { tier });
      if (!r.admitted) throw new Error('the dam refused in mode off');
      return { lease: r.lease, userId, tier };
    }
    const started = process.hrtime.bigint();
    const r = await this.dam.admit(userId, { tier, waitMs: this.config.DAM_QUEUE_MAX > 0 ? waitMs : 0 });
    this.metrics.damAdmitDuration.observe({ outcome: r.admitted ? 'admitted' : r.reason }, Number(process.hrtime.bigint() - started) / 1e9);
    if (r.admitted) {
      this.metrics.damAdmitted.inc({ fallback: String(r.fallback) });
      if (r.shadowRefusal) {
        this.metrics.damShadowRefused.inc({ reason: r.shadowRefusal });
        this.logger.info({ reason: r.shadowRefusal, userId }, 'dam (shadow): would have refused this stream');
      }
      return { lease: r.lease, userId, tier };
    }
    if (r.reason === 'queued') return this.queued(r.waiter, userId, tier);
    this.metrics.damRefused.inc({ reason: r.reason });
    throw this.refusals.of(r.reason, r.global?.capacity, 'retryAfterMs' in r ? r.retryAfterMs : undefined);
  }

  private queued(waiter: Waiter<Lease>, userId: string | null, tier: string | null): QueuedAdmission {
    this.metrics.damQueued.inc();
    return queuedAdmission(waiter, userId, tier, {
      admitted: (waitedMs) => {
        this.metrics.damWaited.observe({ outcome: 'admitted' }, waitedMs / 1000);
        this.metrics.damAdmitted.inc({ fallback: 'false' });
      },
      ended: (reason, waitedMs) => {
        this.metrics.damWaited.observe({ outcome: reason }, waitedMs / 1000);
        if (reason !== 'left') this.metrics.damRefused.inc({ reason: `wait_${reason}` });
      },
      refusal: (reason, retryAfterMs) =>
        reason === 'stopped'
          ? new GatewayException(ErrorCode.Draining, 'This instance is shutting down; open a new stream (it lands on another instance).', { retryAfterSec: 1 })
          : this.refusals.of(reason === 'timeout' ? 'wait_timeout' : reason === 'shed' ? 'wait_shed' : 'dam_full', undefined, retryAfterMs),
    });
  }

  /** Every wait on this instance ends now (it drains): the waiters get `draining` and reconnect elsewhere. */
  endWaits(): void {
    this.dam.endWaits();
  }

  /**
   * The refusal admit() would give at once, without asking Redis: this instance holds its ceiling
   * (with the default settings a full global budget means every instance does). Counted as admit()
   * counts it; null when admit() has to decide (also for a request that offers to wait). Throws
   * what admit() throws first (a missing or bad JWT), before anything is counted.
   */
  refuseAtCeiling(credentials: Credentials): GatewayException | null {
    if (!this.dam.atCeiling) return null;
    resolveUser(credentials, this.identity);
    this.atCeilingDecided.observe(0);
    this.atCeilingRefused.inc();
    return this.refusals.of('instance_full', this.dam.snapshot().global?.capacity);
  }

  /** Per-user question rate; throws user_rate_limited when spent. Returns the limit to report, if one applies. */
  async checkQuestionRate(userId: string | null): Promise<RateLimitInfo | null> {
    if (userId === null || this.userRate === null || !this.policy.flowControl) return null;
    const d = await this.userRate.consume(userId);
    const rateLimit = questionLimit(d);
    if (d.allowed) return rateLimit;
    if (this.policy.shadow) {
      this.metrics.damShadowRefused.inc({ reason: 'user_rate' });
      this.logger.info({ userId }, 'dam (shadow): would have refused this question (user rate)');
      return rateLimit;
    }
    this.metrics.damRefused.inc({ reason: 'user_rate' });
    throw new GatewayException(ErrorCode.UserRateLimited, `At most ${d.limit} questions per ${d.windowSec} s.`, {
      retryAfterSec: d.resetSec,
      rateLimit,
    });
  }

  async status(): Promise<Omit<DamStatus, 'line' | 'tiers'> & { line: Record<string, unknown>; tiers: unknown[]; limits: Record<string, unknown> }> {
    const s = await this.dam.status();
    return {
      ...s,
      // The AI gate's limit for a question that does not wait (one that waits: up to line.maxWaitMs).
      line: { ...s.line, aiGateMs: this.config.DAM_MAX_QUEUE_WAIT_MS },
      // Each tier's reserved shares (sessions, AI) and the sessions it holds.
      tiers: this.tiers.enabled
        ? s.tiers.map((t) => ({ name: t.name, sessions: t.sessions, reserved: { sessions: t.reservedShare, ai: this.tiers.list.find((c) => c.name === t.name)?.ai ?? 0 } }))
        : [],
      limits: {
        userMaxSessions: this.config.DAM_USER_MAX_SESSIONS,
        userQuestions: this.config.DAM_USER_QUESTIONS,
        userQuestionWindowSec: this.config.DAM_USER_QUESTION_WINDOW_SEC,
        limitByIp: this.config.DAM_LIMIT_BY_IP,
        jwt: this.config.AUTH_JWT_SECRET !== undefined,
      },
    };
  }
}

function questionLimit(d: RateDecision): RateLimitInfo {
  return { policy: 'questions', limit: d.limit, windowSec: d.windowSec, remaining: d.remaining, resetSec: d.resetSec };
}
