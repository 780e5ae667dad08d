/** Seconds of history the estimate looks at. */
export const DAM_FULL_WINDOW_SEC = 10;

/** Longest Retry-After a dam_full refusal gives, in s. */
export const DAM_FULL_RETRY_AFTER_MAX_SEC = 30;

/**
 * Refused stream opens per second an instance is asked to absorb at least, however few sessions
 * turn over: a refusal costs a request's worth of work, and a full gateway has little to spare.
 */
export const DAM_FULL_REFUSALS_PER_SEC = 50;

/** Retries per admitted stream the waiting clients are brought back at: a freed slot is taken at once. */
export const RETRY_ATTEMPTS_PER_ADMIT = 3;

interface Bucket {
  sec: number;
  admitted: number;
  /** Sum of the Retry-After given to this second's refusals, in s. */
  retrySec: number;
}

/**
 * Retry-After for a stream refused because the dam is full (429 dam_full). With a few clients
 * waiting it is 1-3 s, small and jittered so they do not come back in one wave. With many it grows:
 * each refused client comes back every Retry-After seconds, so the refusals an instance answers per
 * second are the clients waiting divided by the mean Retry-After. In the experiment a thousand
 * clients beyond the budget, refused at 1-3 s, sent one gateway 270 refusals a second on top of its
 * thousand streams, and its refusals slowed to a quarter of a second.
 *
 * The clients waiting are counted without knowing who they are (Little's law): the Retry-After given
 * over the last DAM_FULL_WINDOW_SEC, divided by the window. The mean Retry-After (2 x base, spread
 * uniformly over [base, 3 x base]) is chosen so that they come back at RETRY_ATTEMPTS_PER_ADMIT
 * per stream admitted here, and at no more than DAM_FULL_REFUSALS_PER_SEC when few are admitted.
 */
export class DamFullRetryAfter {
  private readonly buckets: Bucket[] = Array.from({ length: DAM_FULL_WINDOW_SEC }, () => ({ sec: -1, admitted: 0, retrySec: 0 }));

  constructor(
    private readonly now: () => number = Date.now,
    private readonly random: () => number = Math.random,
  ) {}

  /** A stream was admitted on this instance (a slot turned over). */
  admitted(): void {
    this.bucket().admitted += 1;
  }

  /** The Retry-After (s) for a stream refused now; it counts as given. */
  refused(): number {
    const nowSec = Math.floor(this.now() / 1_000);
    let admitted = 0;
    let retrySec = 0;
    for (const b of this.buckets) {
      if (b.sec > nowSec - DAM_FULL_WINDOW_SEC) {
        admitted += b.admitted;
        retrySec += b.retrySec;
      }
    }
    const waiting = retrySec / DAM_FULL_WINDOW_SEC;
    const comebacksPerSec = Math.max(DAM_FULL_REFUSALS_PER_SEC, (RETRY_ATTEMPTS_PER_ADMIT * admitted) / DAM_FULL_WINDOW_SEC);
    const base = Math.min(DAM_FULL_RETRY_AFTER_MAX_SEC / 3, Math.max(1, Math.ceil(waiting / (2 * comebacksPerSec))));
    const retryAfter = base + Math.min(2 * base, Math.floor(this.random() * (2 * base + 1)));
    this.bucket().retrySec += retryAfter;
    return retryAfter;
  }

  private bucket(): Bucket {
    const sec = Math.floor(this.now() / 1_000);
    const b = this.buckets[sec % DAM_FULL_WINDOW_SEC] as Bucket;
    if (b.sec !== sec) {
      b.sec = sec;
      b.admitted = 0;
      b.retrySec = 0;
    }
    return b;
  }
}
