/** Raised when Redis did not answer within the deadline. */
export class RedisDeadlineError extends Error {
  constructor(ms: number) {
    super(`Redis did not answer within ${ms} ms`);
    this.name = 'RedisDeadlineError';
  }
}

/**
 * Rejects if `p` has not settled within `ms`. The rejection waits one setImmediate after the
 * timer: when the event loop was blocked, a reply already sitting in the socket is read in the
 * poll phase first, so a busy process does not mistake its own lag for a dead Redis.
 */
export function withDeadline<T>(p: Promise<T>, ms: number): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    let settled = false;
    const timer = setTimeout(() => {
      setImmediate(() => {
        if (settled) return;
        settled = true;
        reject(new RedisDeadlineError(ms));
      });
    }, ms);
    p.then(
      (v) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        resolve(v);
      },
      (err: unknown) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        // Passed through as is: callers match on their own rejection types (e.g. RateLimiterRes).
        reject(err);
      },
    );
  });
}
