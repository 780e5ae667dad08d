import { createSecretKey, randomInt } from 'node:crypto';
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
  type RefusalReason,
} from '@traffic-dam/dam';
import { GATEWAY_CONFIG, type GatewayConfig } from '../common/config/config';
import { DamModePolicy } from '../common/dam-mode.policy';
import { ErrorCode, GatewayException, type RateLimitInfo } from '../common/errors';
import { MetricsService } from '../metrics/metrics.service';
import { DamFullRetryAfter } from './dam-full-retry';
import { resolveIdentity, verifyBearerJwt, type Credentials, type IdentityOptions, type VerifiedIdentity } from './identity';

export const DAM = Symbol('DAM');
export const USER_RATE = Symbol('USER_RATE');
export const ADMISSION_REDIS = Symbol('ADMISSION_REDIS');

export interface Admission {
  lease: Lease;
  userId: string | null;
}

/** The dam as the session core sees it: identity, admission, refusals as domain errors, metrics, logs. */
@Injectable()
export class DamService implements OnApplicationBootstrap, OnApplicationShutdown {
  private readonly identity: IdentityOptions;
  private readonly damFullRetry = new DamFullRetryAfter();

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
    metrics.registerDamCollector(() => this.dam.snapshot());
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

  /** Admits a new session (any transport) or throws the refusal (dam_full, user_session_limit, redis_unavailable). */
  async admit(credentials: Credentials): Promise<Admission> {
    const userId = resolveIdentity(credentials, this.identity);
    if (!this.policy.flowControl) {
      const r = await this.dam.admit(userId);
      if (!r.admitted) throw new Error('the dam refused in mode off');
      return { lease: r.lease, userId };
    }
    const end = this.metrics.damAdmitDuration.startTimer();
    const r = await this.dam.admit(userId);
    end({ outcome: r.admitted ? 'admitted' : r.reason });
    if (r.admitted) {
      this.metrics.damAdmitted.inc({ fallback: String(r.fallback) });
      if (r.shadowRefusal) {
        this.metrics.damShadowRefused.inc({ reason: r.shadowRefusal });
        this.logger.info({ reason: r.shadowRefusal, userId }, 'dam (shadow): would have refused this stream');
      }
      return { lease: r.lease, userId };
    }
    throw this.refused(r.reason, r.global?.capacity);
  }

  /**
   * The refusal admit() would give at once, without asking Redis: this instance holds its ceiling
   * (with the default settings a full global budget means every instance does). Counted as admit()
   * counts it; null when admit() has to decide. Throws what admit() throws first (a missing or bad
   * JWT), before anything is counted.
   */
  refuseAtCeiling(credentials: Credentials): GatewayException | null {
    if (!this.dam.atCeiling) return null;
    resolveIdentity(credentials, this.identity);
    this.metrics.damAdmitDuration.observe({ outcome: 'instance_full' }, 0);
    return this.refused('instance_full', this.dam.snapshot().global?.capacity);
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

  async status(): Promise<DamStatus & { limits: Record<string, unknown> }> {
    const s = await this.dam.status();
    return {
      ...s,
      limits: {
        userMaxSessions: this.config.DAM_USER_MAX_SESSIONS,
        userQuestions: this.config.DAM_USER_QUESTIONS,
        userQuestionWindowSec: this.config.DAM_USER_QUESTION_WINDOW_SEC,
        limitByIp: this.config.DAM_LIMIT_BY_IP,
        jwt: this.config.AUTH_JWT_SECRET !== undefined,
      },
    };
  }

  private refused(reason: RefusalReason, capacity: number | undefined): GatewayException {
    this.metrics.damRefused.inc({ reason });
    switch (reason) {
      case 'dam_full':
      case 'instance_full': {
        // Grows with the clients waiting for a slot (see dam-full-retry.ts).
        const retryAfterSec = this.damFullRetry.refused();
        return new GatewayException(ErrorCode.DamFull, 'No session slot is free; retry after the given delay.', {
          retryAfterSec,
          rateLimit: { policy: 'sessions', limit: capacity, remaining: 0, resetSec: retryAfterSec },
        });
      }
      case 'user_sessions': {
        const retryAfterSec = smallJitteredRetrySec();
        return new GatewayException(
          ErrorCode.UserSessionLimit,
          `At most ${this.config.DAM_USER_MAX_SESSIONS} open sessions per user; close one first.`,
          {
            retryAfterSec,
            rateLimit: { policy: 'user-sessions', limit: this.config.DAM_USER_MAX_SESSIONS, remaining: 0, resetSec: retryAfterSec },
          },
        );
      }
      case 'redis_unavailable':
        return new GatewayException(ErrorCode.RedisUnavailable, 'The session budget cannot be checked right now.', {
          retryAfterSec: smallJitteredRetrySec(),
        });
    }
  }
}

/** 1-3 s: small, and jittered so refused clients do not come back in one wave. */
function smallJitteredRetrySec(): number {
  return 1 + randomInt(3);
}

function questionLimit(d: RateDecision): RateLimitInfo {
  return { policy: 'questions', limit: d.limit, windowSec: d.windowSec, remaining: d.remaining, resetSec: d.resetSec };
}
