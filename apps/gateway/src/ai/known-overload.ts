/** Longest a refusal from the gate is trusted without asking Redis again, in ms. */
export const KNOWN_OVERLOAD_MAX_MS = 1_000;

/** What the gate answered, and with which inputs. */
export interface GateReading {
  /** The estimated wait the gate read, in ms (-1: unknown). */
  waitMs: number;
  /** The rate the wait was estimated with, in answers/s. */
  gateRate: number;
  /** The fastest the workers can start answers (their declared capacity), in answers/s. */
  maxRate: number;
}

/** A reading of a question the gate refused (its wait was over the limit it was given). */
export type GateRefusal = GateReading;

interface Proof {
  sentAt: number;
  waitMs: number;
  /** ms of proof per ms of wait over a limit: min(gateRate, maxRate) / maxRate. */
  k: number;
}

/**
 * What the gate's last reading of the line proves about it without asking again. A wait W,
 * estimated at rate r, over a limit L means the line was (W - L) x r / 1000 questions too long for
 * that limit. The line shortens only by answers starting, at most at the workers' declared
 * capacity R, so for the next (W - L) x r / R ms any question with that limit would be refused
 * too (other instances can only lengthen it). Under overload that turns most refusals into ones
 * without a Redis round trip (a refused question used to cost four: claim, rate, gate, release),
 * and Redis is asked again as soon as the line may have moved. A question's limit depends on its
 * tier and on whether it offered to wait, so the proof is kept as the reading and judged per limit.
 *
 * The proof holds for the gate's inputs as they were. When this instance's view of the workers
 * changes (another rate, other answers in progress), forget() drops it. The window starts when
 * the question was sent, which is before the gate decided, so it never outlasts the proof. A
 * question queued is an exact reading of the line then, and replaces the proof; a refusal that
 * proves less than the one kept (replies come back in the order the questions were sent) does not.
 */
export class KnownOverload {
  private proof: Proof | null = null;

  /** The gate refused a question sent at sentAt (ms since epoch). */
  refused(sentAt: number, r: GateRefusal): void {
    const p = proofOf(sentAt, r);
    if (p === null) return;
    if (this.proof === null || p.sentAt + p.waitMs * p.k > this.proof.sentAt + this.proof.waitMs * this.proof.k) this.proof = p;
  }

  /** The gate queued a question sent at sentAt: the line's wait was r.waitMs then. */
  queued(sentAt: number, r: GateReading): void {
    this.proof = proofOf(sentAt, r);
  }

  /** The gate's inputs changed: nothing is proven. */
  forget(): void {
    this.proof = null;
  }

  /** The estimated wait of the reading that proves a question with this limit would be refused at now, or null if nothing does. */
  overloadedAt(now: number, limitMs: number): number | null {
    const p = this.proof;
    if (p === null || p.waitMs <= limitMs) return null;
    const until = p.sentAt + Math.min((p.waitMs - limitMs) * p.k, KNOWN_OVERLOAD_MAX_MS);
    return now < until ? p.waitMs : null;
  }
}

/** An unknown wait (nothing drained lately) or an unknown rate or capacity proves nothing. */
function proofOf(sentAt: number, r: GateReading): Proof | null {
  if (r.waitMs < 0 || r.gateRate <= 0 || r.maxRate <= 0) return null;
  return { sentAt, waitMs: r.waitMs, k: Math.min(r.gateRate, r.maxRate) / r.maxRate };
}
