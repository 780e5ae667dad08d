/** Longest a refusal from the gate is trusted without asking Redis again, in ms. */
export const KNOWN_OVERLOAD_MAX_MS = 1_000;

/**
 * What the last answer of the AI gate proves about the line without asking it again. The line
 * only shortens by being answered, at the gate's rate: a refusal whose estimated wait was W against
 * a limit L means that any question asked within W - L ms of it would be refused too (other
 * instances can only lengthen the line). Under overload that turns nearly every refusal into one
 * without a Redis round trip (a refused question used to cost four: claim, rate, gate, release),
 * and Redis is asked again exactly when the line may have moved. The window starts when the
 * refused request was sent, which is before the gate decided, so it never outlasts the proof.
 */
export class KnownOverload {
  private until = 0;
  private waitMs = 0;

  /** The gate refused a question sent at sentAt (ms since epoch) with an estimated wait of waitMs (-1: unknown). */
  refused(sentAt: number, waitMs: number, maxWaitMs: number): void {
    // An unknown wait (nothing drained lately) proves nothing about the next moment.
    if (waitMs < 0) return;
    const until = sentAt + Math.min(waitMs - maxWaitMs, KNOWN_OVERLOAD_MAX_MS);
    if (until > this.until) {
      this.until = until;
      this.waitMs = waitMs;
    }
  }

  /** The gate queued a question: the line had room, whatever an earlier refusal said. */
  queued(): void {
    this.until = 0;
  }

  /** The estimated wait of the refusal that proves the line is still too long at now, or null if nothing does. */
  overloadedAt(now: number): number | null {
    return now < this.until ? this.waitMs : null;
  }
}
