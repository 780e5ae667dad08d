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
   * Most sessions this instance holds, checked locally and exactly. Default: slotsPerInstance.
   * Above the share it pools idle capacity of other instances, at the price of exactness while
   * Redis is unreachable (each instance then only knows its own count).
   */
  instanceCeiling?: number;
  /** Heartbeat period in ms. Default 1,000. */
  heartbeatMs?: number;
  /** An instance whose heartbeat is older than this, in ms, is dead and its slots return. Default 3,000. */
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
  /** Most concurrent sessions per identified user, across all instances; 0 turns it off. Default 0. */
  userMaxSessions?: number;
  /** Key prefix. Default 'td:dam'. */
  keyPrefix?: string;
  /** Hash tag shared by every key, so the scripts run on Redis Cluster. Default 'dam'. */
  hashTag?: string;
  /** Called for state changes worth a log line or a metric. */
  onEvent?: (event: DamEvent) => void;
}

export type DamEvent =
  | { type: 'registered'; generation: string }
  | { type: 'fenced'; generation: string; held: number }
  | { type: 'fallback_entered'; reason: string; kind: RedisErrorKind }
  | { type: 'fallback_left'; afterMs: number; held: number }
  | { type: 'heartbeat_failed'; reason: string; kind: RedisErrorKind };

export interface ResolvedDamOptions extends Required<Omit<DamOptions, 'onEvent'>> {
  onEvent: (event: DamEvent) => void;
}

export function resolveDamOptions(o: DamOptions): ResolvedDamOptions {
  const slots = o.slotsPerInstance ?? 1_000;
  const r: ResolvedDamOptions = {
    redis: o.redis,
    instanceId: o.instanceId,
    mode: o.mode ?? 'enforce',
    slotsPerInstance: slots,
    instanceCeiling: o.instanceCeiling ?? slots,
    heartbeatMs: o.heartbeatMs ?? 1_000,
    heartbeatTtlMs: o.heartbeatTtlMs ?? 3_000,
    redisTimeoutMs: o.redisTimeoutMs ?? 20,
    redisTimeoutCapMs: Math.max(o.redisTimeoutMs ?? 20, o.redisTimeoutCapMs ?? 1_000),
    redisDeadline: o.redisDeadline ?? new AdaptiveDeadline(o.redisTimeoutMs ?? 20, Math.max(o.redisTimeoutMs ?? 20, o.redisTimeoutCapMs ?? 1_000)),
    fallback: o.fallback ?? 'local',
    userMaxSessions: o.userMaxSessions ?? 0,
    keyPrefix: o.keyPrefix ?? 'td:dam',
    hashTag: o.hashTag ?? 'dam',
    onEvent: o.onEvent ?? (() => undefined),
  };
  if (!Number.isInteger(r.slotsPerInstance) || r.slotsPerInstance < 1) throw new RangeError('slotsPerInstance must be a positive integer');
  if (!Number.isInteger(r.instanceCeiling) || r.instanceCeiling < 1) throw new RangeError('instanceCeiling must be a positive integer');
  if (r.heartbeatTtlMs <= r.heartbeatMs) throw new RangeError('heartbeatTtlMs must be longer than heartbeatMs');
  if (/[{}]/.test(r.hashTag) || r.hashTag.length === 0) throw new RangeError('hashTag must be non-empty and without braces');
  return r;
}
