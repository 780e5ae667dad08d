import { redisErrorKind, type RedisErrorKind } from '@traffic-dam/dam';
import type { PinoLogger } from 'nestjs-pino';
import type { Counter } from 'prom-client';
import { ErrorCode, GatewayException } from '../errors';

const DETAIL: Readonly<Record<RedisErrorKind, string>> = {
  timeout: 'Shared state did not answer in time; try again.',
  oom: 'Shared state is at its memory limit and takes no writes; try again later.',
  unreachable: 'Shared state cannot be reached; try again.',
  error: 'Shared state is unavailable; try again.',
};

/** One log line per kind of failure at most this often: an outage must not write one per request. */
const LOG_EVERY_MS = 10_000;

/**
 * Redis calls on a request path that failed: counted by kind (`td_redis_errors_total`), logged at
 * most once per kind every 10 s with how many came since, never with a stack, and answered with
 * 503 `redis_unavailable` whose detail says which kind (a full Redis is not a dead one).
 */
export class RedisFailures {
  private readonly lastLogged = new Map<RedisErrorKind, number>();
  private readonly unlogged = new Map<RedisErrorKind, number>();

  constructor(
    private readonly errors: Counter<'kind' | 'op'>,
    private readonly logger: PinoLogger,
  ) {}

  /** Counts and maybe logs one failure of `op`; returns its kind. */
  note(op: string, err: unknown): RedisErrorKind {
    const kind = redisErrorKind(err);
    this.errors.inc({ kind, op });
    const now = Date.now();
    const since = (this.unlogged.get(kind) ?? 0) + 1;
    if (now - (this.lastLogged.get(kind) ?? 0) < LOG_EVERY_MS) {
      this.unlogged.set(kind, since);
      return kind;
    }
    this.lastLogged.set(kind, now);
    this.unlogged.set(kind, 0);
    this.logger.warn({ redis: { kind, op, error: err instanceof Error ? err.message : String(err), failures: since } }, `Redis ${kind}: ${op} failed`);
    return kind;
  }

  /** Counts the failure and gives the 503 to answer. */
  refusal(op: string, err: unknown): GatewayException {
    return RedisFailures.unavailable(this.note(op, err));
  }

  /** The 503 for Redis failing this way. */
  static unavailable(kind: RedisErrorKind): GatewayException {
    return new GatewayException(ErrorCode.RedisUnavailable, DETAIL[kind], { retryAfterSec: kind === 'oom' ? 5 : 1 });
  }
}
