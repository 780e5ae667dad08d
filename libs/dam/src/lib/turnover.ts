/**
 * Slots freed per second across the cluster, measured from the budget's counter of freed slots as
 * each heartbeat reads it (on Redis's clock), over a sliding window. This is what the line moves
 * at: every slot freed while someone waits is handed to the head of the line. Nothing is declared:
 * before two samples a second apart, or after a window without a slot freed, it is unknown.
 */
export class TurnoverMeter {
  private readonly samples: Array<{ at: number; freed: number }> = [];

  constructor(private readonly windowMs: number) {}

  /** One reading of the counter at time `at` (ms). A counter that went back (Redis restarted) starts over. */
  sample(at: number, freed: number): void {
    const last = this.samples[this.samples.length - 1];
    if (last && (at < last.at || freed < last.freed)) this.samples.length = 0;
    this.samples.push({ at, freed });
    while (this.samples.length > 2 && (this.samples[1] as { at: number }).at <= at - this.windowMs) this.samples.shift();
  }

  /** Slots freed per second over the window, or null while unknown (or none were freed). */
  perSec(): number | null {
    const first = this.samples[0];
    const last = this.samples[this.samples.length - 1];
    if (!first || !last || last.at - first.at < 1_000) return null;
    const rate = ((last.freed - first.freed) * 1_000) / (last.at - first.at);
    return rate > 0 ? rate : null;
  }

  /** ms until `ahead` more slots are freed at the measured rate, or null while unknown. */
  etaMs(ahead: number): number | null {
    const rate = this.perSec();
    if (rate === null) return null;
    return Math.round((ahead * 1_000) / rate / 100) * 100;
  }

  /** Most waiters ahead that can be served within waitMs, or -1 while unknown (any). */
  reachable(waitMs: number): number {
    const rate = this.perSec();
    return rate === null ? -1 : Math.floor((rate * waitMs) / 1_000);
  }
}
