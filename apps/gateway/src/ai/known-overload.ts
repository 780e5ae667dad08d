/** Longest a refusal from the gate is trusted without asking Redis again, in ms. */
export const KNOWN_OVERLOAD_MAX_MS = 1_000;

/** What the gate answered when it refused, and with which inputs. */
export interface GateRefusal {
  /** The estimated wait the gate refused, in ms (-1: unknown). */
  waitMs: number;
  /** The limit it was over, in ms. */
  maxWaitMs: number;
  /** The rate the wait was estimated with, in answers/s. */
  gateRate: number;
  /** The fastest the workers can start answers (their declared capacity), in answers/s. */
  maxRate: number;
}

/**
 * What the last refusal of the AI gate proves about the line without asking it again. A refusal
 * of a wait W over a limit L, estimated at rate r, means the line was (W - L) x r / 1000 questions
 * too long. The line shortens only by answers starting, at most at the workers' declared capacity
 * R, so for the next (W - L) x r / R ms any question would be refused too (other instances can
 * only lengthen it). Under overload that turns most refusals into ones without a Redis round trip
 * (a refused question used to cost four: claim, rate, gate, release), and Redis is asked again as
 * soon as the line may have moved.
 *
 * The proof holds for the gate's inputs as they were. When this instance's view of the workers
 * changes (another rate, other answers in progress), forget() drops it. The window starts when
 * the refused question was sent, which is before the gate decided, so it never outlasts the proof.
 */
export class KnownOverload {
  private until = 0;
  private waitMs = 0;

  /** The gate refused a question sent at sentAt (ms since epoch). */
  refused(sentAt: number, r: GateRefusal): void {
    // An unknown wait (nothing drained lately) or an unknown capacity proves nothing.
    if (r.waitMs < 0 || r.gateRate <= 0 || r.maxRate <= 0) return;
    const shortestMs = ((r.waitMs - r.maxWaitMs) * Math.min(r.gateRate, r.maxRate)) / r.maxRate;
    const until = sentAt + Math.min(shortestMs, KNOWN_OVERLOAD_MAX_MS);
    if (until > this.until) {
      this.until = until;
      this.waitMs = r.waitMs;
    }
  }

  /** The line had room (a question was queued), or the gate's inputs changed: nothing is proven. */
  forget(): void {
    this.until = 0;
  }

  /** The estimated wait of the refusal that proves the line is still too long at now, or null if nothing does. */
  overloadedAt(now: number): number | null {
    return now < this.until ? this.waitMs : null;
  }
}
