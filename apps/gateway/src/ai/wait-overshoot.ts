/** Samples kept for the quantile: a few seconds of answers at 100/s. */
export const OVERSHOOT_SAMPLES = 256;
/** The quantile of the overshoot the gate keeps as its margin: its promise is about the p95. */
export const OVERSHOOT_QUANTILE = 0.95;
/** At most this share of the limit goes to the margin: a few outliers cannot close the gate. */
export const MARGIN_MAX_SHARE = 0.25;
/** Share of the gap the floor rises per sample above it: a path that got slower for good is learnt in a few hundred answers. */
const FLOOR_RISE = 0.002;
/** Fewer samples than this say nothing yet. */
const MIN_SAMPLES = 20;

/**
 * How much later than estimated the first tokens of admitted questions come. Each question the
 * gate queued here gives one sample when its first token arrives: the time from its enqueue to
 * that token, less the wait the gate estimated. Unloaded, that is the path's own time to a first
 * token (the model's, the worker's start, the relay), the floor. What a sample takes beyond the
 * floor is the estimate's error: the start pacing of the workers, a line that drained slower than
 * its rate said. The gate adds the p95 of that overshoot to every estimated wait, so the p95
 * wait of what it admits stays within its limit instead of its median.
 */
export class WaitOvershoot {
  private readonly samples = new Float64Array(OVERSHOOT_SAMPLES);
  private count = 0;
  private next = 0;
  private floor = Number.POSITIVE_INFINITY;
  private margin = 0;
  private dirty = false;

  /** One admitted question: `tookMs` from its enqueue to its first token, `estimatedMs` the wait the gate estimated for it. */
  observe(tookMs: number, estimatedMs: number): void {
    if (!(tookMs >= 0) || !(estimatedMs >= 0)) return;
    const s = tookMs - estimatedMs;
    if (s < this.floor) this.floor = s;
    else this.floor += FLOOR_RISE * (s - this.floor);
    this.samples[this.next] = s;
    this.next = (this.next + 1) % OVERSHOOT_SAMPLES;
    this.count = Math.min(this.count + 1, OVERSHOOT_SAMPLES);
    this.dirty = true;
  }

  /** The margin to add to an estimated wait, in ms: the p95 overshoot over the floor, at most MARGIN_MAX_SHARE of limitMs. */
  marginMs(limitMs: number): number {
    if (this.dirty) {
      this.margin = this.compute();
      this.dirty = false;
    }
    return Math.min(this.margin, Math.floor(limitMs * MARGIN_MAX_SHARE));
  }

  private compute(): number {
    if (this.count < MIN_SAMPLES) return 0;
    const sorted = Array.from(this.samples.subarray(0, this.count)).sort((a, b) => a - b);
    const q = sorted[Math.min(this.count - 1, Math.floor(OVERSHOOT_QUANTILE * this.count))] as number;
    return Math.max(0, Math.round(q - this.floor));
  }
}
