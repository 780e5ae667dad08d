import type { Lease, Waiter, WaitEndReason } from '@traffic-dam/dam';
import type { GatewayException } from '../common/errors';
import type { Admission } from './dam.service';

/** Longest Retry-After taken from the line's estimate, in s. */
export const LINE_RETRY_AFTER_MAX_SEC = 60;

/** The line's own estimate (ms) as a Retry-After in whole seconds, 1 to LINE_RETRY_AFTER_MAX_SEC. */
export function lineRetryAfterSec(estimateMs: number): number {
  return Math.min(LINE_RETRY_AFTER_MAX_SEC, Math.max(1, Math.ceil(estimateMs / 1_000)));
}

/** A stream in the waiting line, as the session core sees it. */
export interface QueuedAdmission {
  readonly queued: true;
  /** 1 = next; the latest known. */
  readonly position: number;
  /** Estimated ms until admitted (measured turnover), or null while unknown. */
  readonly etaMs: number | null;
  /** Called when the position or the estimate changed (about once a second at most). */
  onChange(cb: (position: number, etaMs: number | null) => void): void;
  /** The client went away: out of the line at once. */
  leave(): void;
  /**
   * The admission once a slot is handed to it; null when the client left; rejects with the
   * refusal (dam_full with the line's estimate, draining) when the wait ended without a slot.
   */
  readonly admission: Promise<Admission | null>;
}

export interface QueuedHooks {
  admitted(waitedMs: number): void;
  ended(reason: WaitEndReason, waitedMs: number): void;
  refusal(reason: Exclude<WaitEndReason, 'left'>, retryAfterMs: number | null): GatewayException;
}

/** Wraps the dam's waiter: outcomes become an admission, null, or the domain refusal. */
export function queuedAdmission(waiter: Waiter<Lease>, userId: string | null, tier: string | null, hooks: QueuedHooks): QueuedAdmission {
  const admission = waiter.outcome.then((o): Admission | null => {
    if (o.admitted) {
      hooks.admitted(o.waitedMs);
      return { lease: o.lease, userId, tier };
    }
    hooks.ended(o.reason, o.waitedMs);
    if (o.reason === 'left') return null;
    throw hooks.refusal(o.reason, o.retryAfterMs);
  });
  return {
    queued: true,
    get position() {
      return waiter.position;
    },
    get etaMs() {
      return waiter.etaMs;
    },
    onChange: (cb) => waiter.onChange(cb),
    leave: () => waiter.leave(),
    admission,
  };
}

export function isQueued(a: Admission | QueuedAdmission): a is QueuedAdmission {
  return 'queued' in a;
}
