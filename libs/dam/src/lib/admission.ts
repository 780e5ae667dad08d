import type { GlobalView } from './budget.store';
import type { Waiter } from './waiting-line';

/** line_full and wait_too_long: refused by the waiting line's bounds (only a request that offered to wait). */
export type RefusalReason = 'dam_full' | 'instance_full' | 'user_sessions' | 'redis_unavailable' | 'line_full' | 'wait_too_long';

export interface AdmitOptions {
  /** The session's tier (a verified claim); absent or not configured: the last tier. */
  tier?: string | null;
  /**
   * How long the request may wait in the line for a slot, in ms (capped to the line's maxWaitMs).
   * 0 or absent: no wait, a full budget refuses at once. Ignored when the dam has no line.
   */
  waitMs?: number;
}

/** One admitted session's hold on the budget. release() is idempotent: the slot returns once. */
export interface Lease {
  readonly userId: string | null;
  /** False when admitted without a slot (shadow over budget, mode off). */
  readonly budgeted: boolean;
  readonly released: boolean;
  /** The tier the session is counted in. */
  readonly tier: string;
  /**
   * Settles once Redis applied the release (`ok`), dropped it (`fenced`) or the call failed
   * (`failed`: an error, or the connection closed); null while not released, or when the release
   * did not go to Redis (fallback, no slot). It says what Redis did, so it has no deadline: a slow
   * reply is still `ok`. Callers need not wait for it (the heartbeat heals a lost release); tests
   * and benchmarks do.
   */
  readonly confirmation: Promise<ReleaseOutcome> | null;
  release(): void;
}

export type ReleaseOutcome = 'ok' | 'fenced' | 'failed';

export type AdmitResult =
  | { admitted: true; lease: Lease; fallback: boolean; shadowRefusal?: RefusalReason; global?: GlobalView }
  | {
      admitted: false;
      reason: RefusalReason;
      fallback: boolean;
      global?: GlobalView;
      /** For line_full and wait_too_long: the line's own estimate of the wait (ms), when it has one. */
      retryAfterMs?: number | null;
    }
  /** In the line: its outcome settles with a lease or why not. */
  | { admitted: false; reason: 'queued'; waiter: Waiter<Lease>; fallback: false; global?: GlobalView };
