import { randomInt } from 'node:crypto';
import type { RefusalReason } from '@traffic-dam/dam';
import { ErrorCode, RefusalCache, type GatewayException } from '../common/errors';
import { DamFullRetryAfter } from './dam-full-retry';
import { lineRetryAfterSec } from './queued-admission';

/** Why the dam refused a stream, as the refusal's domain error says it: its code, detail, Retry-After and limits. */
export type DamRefusalReason = RefusalReason | 'wait_timeout' | 'wait_shed';

/** The dam's refusals as domain errors, with the Retry-After each gives (one place for the wording and the spread). */
export class DamRefusals {
  private readonly damFullRetry = new DamFullRetryAfter();
  private readonly cache = new RefusalCache();

  constructor(private readonly userMaxSessions: number) {}

  of(
    reason: DamRefusalReason,
    capacity: number | undefined,
    lineEstimateMs?: number | null,
  ): GatewayException {
    switch (reason) {
      case 'line_full':
      case 'wait_too_long':
      case 'wait_timeout':
      case 'wait_shed': {
        // The line's own estimate of when a place frees up, else the crowd's spread (below).
        const retryAfterSec = lineEstimateMs != null ? lineRetryAfterSec(lineEstimateMs) : this.damFullRetry.refused();
        return this.cache.of(ErrorCode.DamFull, LINE_DETAIL[reason], {
          retryAfterSec,
          rateLimit: { policy: 'sessions', limit: capacity, remaining: 0, resetSec: retryAfterSec },
        });
      }
      case 'dam_full':
      case 'instance_full': {
        // Grows with the clients waiting for a slot (see dam-full-retry.ts).
        const retryAfterSec = this.damFullRetry.refused();
        return this.cache.of(ErrorCode.DamFull, 'No session slot is free; retry after the given delay.', {
          retryAfterSec,
          rateLimit: { policy: 'sessions', limit: capacity, remaining: 0, resetSec: retryAfterSec },
        });
      }
      case 'user_sessions': {
        const retryAfterSec = smallJitteredRetrySec();
        return this.cache.of(
          ErrorCode.UserSessionLimit,
          `At most ${this.userMaxSessions} open sessions per user; close one first.`,
          {
            retryAfterSec,
            rateLimit: { policy: 'user-sessions', limit: this.userMaxSessions, remaining: 0, resetSec: retryAfterSec },
          },
        );
      }
      case 'redis_unavailable':
        return this.cache.of(ErrorCode.RedisUnavailable, 'The session budget cannot be checked right now.', {
          retryAfterSec: smallJitteredRetrySec(),
        });
    }
  }
}

const LINE_DETAIL: Record<'line_full' | 'wait_too_long' | 'wait_timeout' | 'wait_shed', string> = {
  line_full: 'No session slot is free and the waiting line is full; retry after the line\'s estimate.',
  wait_too_long: 'No session slot is free and the line\'s estimated wait is longer than the wait offered; retry after it.',
  wait_timeout: 'No session slot was freed for this stream within its wait; retry after the line\'s estimate.',
  wait_shed: 'A higher tier took this place in the full line; retry after the line\'s estimate.',
};

/** 1-3 s: small, and jittered so refused clients do not come back in one wave. */
function smallJitteredRetrySec(): number {
  return 1 + randomInt(3);
}
