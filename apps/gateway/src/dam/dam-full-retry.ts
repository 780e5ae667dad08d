/** Seconds of history the estimate looks at. */
export const DAM_FULL_WINDOW_SEC = 10;

/** Longest Retry-After a dam_full refusal gives, in s. */
export const DAM_FULL_RETRY_AFTER_MAX_SEC = 30;

/**
 * Comebacks per second, per instance, that the clients kept out are spread to. A refusal costs a
 * request's worth of work, and a full gateway has little to spare. It is also the slowest a crowd
 * drains once slots free up: 1,000 clients waiting are back within 20 s.
 */
export const DAM_FULL_REFUSALS_PER_SEC = 50;

interface Bucket {
  sec: number;
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
 * uniformly over [base, 3 x base]) is chosen so that they come back at DAM_FULL_REFUSALS_PER_SEC.
 *
 * Not faster when streams turn over fast here: a first version brought them back at three per
 * stream admitted. In the experiment's S1 almost every admission is a user reopening right after
 * its own answer, which takes the slot it just freed; the crowd's extra comebacks only met a full
 * dam, at 150-240 refusals a second on one gateway. A slot freed for good is taken by the next of
 * 50 comebacks a second, within tens of ms.
 */
export class DamFullRetryAfter {
  private readonly buckets: Bucket[] = Array.from({ length: DAM_FULL_WINDOW_SEC }, () => ({ sec: -1, retrySec: 0 }));

  constructor(
    private readonly now: () => number = Date.now,
    private readonly random: () => number = Math.random,
  ) {}

  /** The Retry-After (s) for a stream refused now; it counts as given. */
  refused(): number {
    const nowSec = Math.floor(this.now() / 1_000);
    let retrySec = 0;
    for (const b of this.buckets) {
      if (b.sec > nowSec - DAM_FULL_WINDOW_SEC) retrySec += b.retrySec;
    }
    const waiting = retrySec / DAM_FULL_WINDOW_SEC;
    const base = Math.min(DAM_FULL_RETRY_AFTER_MAX_SEC / 3, Math.max(1, Math.ceil(waiting / (2 * DAM_FULL_REFUSALS_PER_SEC))));
    const retryAfter = base + Math.min(2 * base, Math.floor(this.random() * (2 * base + 1)));
    this.bucket().retrySec += retryAfter;
    return retryAfter;
  }

  private bucket(): Bucket {
    const sec = Math.floor(this.now() / 1_000);
    const b = this.buckets[sec % DAM_FULL_WINDOW_SEC] as Bucket;
    if (b.sec !== sec) {
      b.sec = sec;
      b.retrySec = 0;
    }
    return b;
  }
}
