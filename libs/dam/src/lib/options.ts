import { AdaptiveDeadline } from './adaptive-deadline';
import type { Cluster, Redis } from 'ioredis';
import type { RedisErrorKind } from './redis-error';

/** enforce: refuse what does not fit. shadow: admit all, count what would be refused. off: no dam. */
export type DamMode = 'enforce' | 'shadow' | 'off';

/** What to do when Redis cannot be reached within the admission deadline. */
export type FallbackPolicy = 'local' | 'reject' | 'admit';

export interface DamOptions {
  /**
   * The admission connection, used for nothing else. Create it with `enableOfflineQueue: false`
   * and `autoResendUnfulfilledCommands: false`, so a call fails fast while Redis is away and a
   * non-idempotent script is never sent twice.
   */
  redis: Redis | Cluster;
  /** This instance's id; unique per process start. */
  instanceId: string;
  /** Default 'enforce'. */
  mode?: DamMode;
  /** Sessions each live instance adds to the global budget. Default 1,000. */
  slotsPerInstance?: number;
  /**
   * Most sessions this instance admits, checked locally and exactly. Default: slotsPerInstance.
   * Above the share it pools idle capacity of other instances, at the price of exactness while
   * Redis is unreachable (each instance then only knows its own count). A request that waits in
   * the line, and a slot handed to a waiter, are bounded by the global budget only: they turn a
   * connection the instance already holds into a session.
   */
  instanceCeiling?: number;
  /** Heartbeat period in ms. Default 500. */
  heartbeatMs?: number;
  /**
   * An instance whose heartbeat is older than this, in ms, is dead and its slots return: a dead
   * instance's share comes back at most this long after it died. Default 2,500. An instance
   * stalled for longer than this less one period (2 s by default) is taken for dead and fenced.
   */
  heartbeatTtlMs?: number;
  /**
   * Least deadline of an admission round trip, in ms; past the deadline the instance falls back.
   * The deadline adapts to the round trips measured on this connection (smoothed + 4 x their
   * variation, as TCP's retransmission timeout; see AdaptiveDeadline), so a loaded machine whose
   * Redis answers in tens of ms raises it instead of deciding on the fallback. Default 20.
   */
  redisTimeoutMs?: number;
  /** Most the admission deadline adapts up to, in ms (at least redisTimeoutMs). Default 1,000. */
  redisTimeoutCapMs?: number;
  /** The deadline to share with other callers on the same connection (the user rate limiter); default one of its own. */
  redisDeadline?: AdaptiveDeadline;
  /** Default 'local': admit up to this instance's share, which is exact because the budget is per instance. */
  fallback?: FallbackPolicy;
  /** Most concurrent sessions per identified user, across all instances (a waiter in the line counts as one); 0 turns it off. Default 0. */
  userMaxSessions?: number;
  /**
   * The waiting line: a request that offers to wait (`admit(user, { waitMs })`) joins one line
   * across all instances when the budget is full, instead of being refused, and is handed a slot
   * as one frees up, first come first served (by tier). Off unless given.
   */
  line?: LineOptions;
  /**
   * Priority tiers, highest first, each with a share of the budget kept for it against every
   * lower tier (and served first from the line). A session without a tier, or with one not
   * listed, is in the last tier. Default: one tier, nothing reserved.
   */
  tiers?: TierOption[];
  /** Key prefix. Default 'td:dam'. */
  keyPrefix?: string;
  /** Hash tag shared by every key, so the scripts run on Redis Cluster. Default 'dam'. */
  hashTag?: string;
  /** Called for state changes worth a log line or a metric. */
  onEvent?: (event: DamEvent) => void;
}

export interface LineOptions {
  /** Most waiters in the line, across all instances; an arrival beyond it is refused (`line_full`). 0 turns the line off. */
  maxWaiters: number;
  /** Longest wait the line offers, in ms: a request's waitMs is capped to it, and an arrival whose estimated wait is longer is refused (`wait_too_long`). Default 60,000. */
  maxWaitMs?: number;
  /** Window over which the turnover (slots freed per second) is measured for the estimates, in ms. Default 10,000. */
  turnoverWindowMs?: number;
  /**
   * Deadline of a waiting request's admission round trip, in ms (it is willing to wait; past it,
   * it is decided on the local share). Default 1,000, at least redisTimeoutMs.
   */
  joinTimeoutMs?: number;
  /**
   * Connection for the line's blocking wake-up (BLMPOP on this instance's notice list), used for
   * nothing else. Default: a duplicate of `redis`, made at start() and closed at stop().
   */
  wakeRedis?: Redis | Cluster;
}

export interface TierOption {
  /** The tier's name as the caller passes it (e.g. a verified JWT's `tier` claim). */
  name: string;
  /** Share of the global budget (0 to 1) kept free for this tier against every lower tier. Default 0. */
  reservedShare?: number;
}

export type DamEvent =
  | { type: 'registered'; generation: string }
  | { type: 'fenced'; generation: string; held: number }
  | { type: 'fallback_entered'; reason: string; kind: RedisErrorKind }
  | { type: 'fallback_left'; afterMs: number; held: number }
  | { type: 'heartbeat_failed'; reason: string; kind: RedisErrorKind };

export interface ResolvedLineOptions extends Required<Omit<LineOptions, 'wakeRedis'>> {
  wakeRedis?: Redis | Cluster;
}

export interface ResolvedDamOptions extends Required<Omit<DamOptions, 'onEvent' | 'line' | 'tiers'>> {
  onEvent: (event: DamEvent) => void;
  line: ResolvedLineOptions;
  tiers: Array<Required<TierOption>>;
}

export function resolveDamOptions(o: DamOptions): ResolvedDamOptions {
  const slots = o.slotsPerInstance ?? 1_000;
  const r: ResolvedDamOptions = {
    redis: o.redis,
    instanceId: o.instanceId,
    mode: o.mode ?? 'enforce',
    slotsPerInstance: slots,
    instanceCeiling: o.instanceCeiling ?? slots,
    heartbeatMs: o.heartbeatMs ?? 500,
    heartbeatTtlMs: o.heartbeatTtlMs ?? 2_500,
    redisTimeoutMs: o.redisTimeoutMs ?? 20,
    redisTimeoutCapMs: Math.max(o.redisTimeoutMs ?? 20, o.redisTimeoutCapMs ?? 1_000),
    redisDeadline: o.redisDeadline ?? new AdaptiveDeadline(o.redisTimeoutMs ?? 20, Math.max(o.redisTimeoutMs ?? 20, o.redisTimeoutCapMs ?? 1_000)),
    fallback: o.fallback ?? 'local',
    userMaxSessions: o.userMaxSessions ?? 0,
    keyPrefix: o.keyPrefix ?? 'td:dam',
    hashTag: o.hashTag ?? 'dam',
    onEvent: o.onEvent ?? (() => undefined),
    line: {
      maxWaiters: o.line?.maxWaiters ?? 0,
      maxWaitMs: o.line?.maxWaitMs ?? 60_000,
      turnoverWindowMs: o.line?.turnoverWindowMs ?? 10_000,
      joinTimeoutMs: o.line?.joinTimeoutMs ?? 1_000,
      wakeRedis: o.line?.wakeRedis,
    },
    tiers: (o.tiers ?? []).map((t) => ({ name: t.name, reservedShare: t.reservedShare ?? 0 })),
  };
  if (!Number.isInteger(r.slotsPerInstance) || r.slotsPerInstance < 1) throw new RangeError('slotsPerInstance must be a positive integer');
  if (!Number.isInteger(r.instanceCeiling) || r.instanceCeiling < 1) throw new RangeError('instanceCeiling must be a positive integer');
  if (r.heartbeatTtlMs <= r.heartbeatMs) throw new RangeError('heartbeatTtlMs must be longer than heartbeatMs');
  if (/[{}]/.test(r.hashTag) || r.hashTag.length === 0) throw new RangeError('hashTag must be non-empty and without braces');
  if (!Number.isInteger(r.line.maxWaiters) || r.line.maxWaiters < 0) throw new RangeError('line.maxWaiters must be a non-negative integer');
  if (!(r.line.maxWaitMs > 0)) throw new RangeError('line.maxWaitMs must be positive');
  if (!(r.line.turnoverWindowMs >= 1_000)) throw new RangeError('line.turnoverWindowMs must be at least 1,000');
  if (!(r.line.joinTimeoutMs > 0)) throw new RangeError('line.joinTimeoutMs must be positive');
  if (r.tiers.length > 8) throw new RangeError('at most 8 tiers');
  if (new Set(r.tiers.map((t) => t.name)).size !== r.tiers.length) throw new RangeError('tier names must be unique');
  if (r.tiers.some((t) => !(t.reservedShare >= 0 && t.reservedShare <= 1))) throw new RangeError("a tier's reservedShare must be within 0 to 1");
  if (r.tiers.reduce((a, t) => a + t.reservedShare, 0) > 1) throw new RangeError("the tiers' reserved shares must add up to at most 1");
  return r;
}
