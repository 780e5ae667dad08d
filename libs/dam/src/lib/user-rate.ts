import type { Redis } from 'ioredis';
import { RateLimiterMemory, RateLimiterRedis, RateLimiterRes } from 'rate-limiter-flexible';
import { AdaptiveDeadline } from './adaptive-deadline';
import { RedisDeadlineError } from './deadline';

export interface UserRateOptions {
  redis: Redis;
  /** Questions a user may ask per window, across all instances. */
  points: number;
  /** Window length in seconds. */
  windowSec: number;
  /** Key prefix. Default 'td:dam:rate'. */
  keyPrefix?: string;
  /** Least deadline of the Redis call in ms; past the deadline this instance counts alone. Default 20. */
  redisTimeoutMs?: number;
  /**
   * The deadline, learnt from measured round trips (shared with the dam's admissions on the same
   * connection); default one of its own from redisTimeoutMs up to 1,000 ms.
   */
  redisDeadline?: AdaptiveDeadline;
}

export interface RateDecision {
  allowed: boolean;
  limit: number;
  remaining: number;
  /** Seconds until the window resets (at least 1). */
  resetSec: number;
  windowSec: number;
  /** True when Redis was away and the local counter decided. */
  local: boolean;
}

/**
 * The per-user question rate (the abuser case), shared by all instances through Redis with
 * rate-limiter-flexible. While Redis is away each instance counts on its own.
 */
export class UserRateLimiter {
  private readonly remote: RateLimiterRedis;
  private readonly local: RateLimiterMemory;
  private readonly deadline: AdaptiveDeadline;

  constructor(private readonly o: UserRateOptions) {
    this.local = new RateLimiterMemory({ points: o.points, duration: o.windowSec });
    this.remote = new RateLimiterRedis({
      storeClient: o.redis,
      points: o.points,
      duration: o.windowSec,
      keyPrefix: o.keyPrefix ?? 'td:dam:rate',
      insuranceLimiter: this.local,
      rejectIfRedisNotReady: true,
    });
    this.deadline = o.redisDeadline ?? new AdaptiveDeadline(o.redisTimeoutMs ?? 20, Math.max(o.redisTimeoutMs ?? 20, 1_000));
  }

  async consume(userId: string): Promise<RateDecision> {
    let local = false;
    let res: RateLimiterRes;
    try {
      res = await this.deadline.run(this.remote.consume(userId)).catch(async (err: unknown) => {
        if (!(err instanceof RedisDeadlineError)) throw err;
        local = true;
        return this.local.consume(userId);
      });
    } catch (err) {
      if (!(err instanceof RateLimiterRes)) throw err;
      return this.decision(false, err, local);
    }
    return this.decision(true, res, local);
  }

  private decision(allowed: boolean, r: RateLimiterRes, local: boolean): RateDecision {
    return {
      allowed,
      limit: this.o.points,
      remaining: Math.max(0, r.remainingPoints),
      resetSec: Math.max(1, Math.ceil(r.msBeforeNext / 1000)),
      windowSec: this.o.windowSec,
      local,
    };
  }
}
