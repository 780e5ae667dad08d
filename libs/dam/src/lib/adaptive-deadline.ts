import { withDeadline } from './deadline';

/**
 * The deadline of a Redis call on a request path, learnt from what Redis measurably takes: like
 * TCP's retransmission timeout, the smoothed round trip plus four times its variation, never under
 * the configured floor nor over the cap. Every call is measured until it really completes, also
 * when the request stopped waiting for it, so a loaded machine raises the deadline instead of
 * turning slow replies into refusals. A deadline bounds how long a request waits, never whether
 * the work behind it is done.
 */
export class AdaptiveDeadline {
  private srtt = 0;
  private rttvar = 0;
  private samples = 0;

  constructor(
    private readonly floorMs: number,
    private readonly capMs: number,
    private readonly now: () => number = () => performance.now(),
  ) {}

  /** The deadline now, in ms. */
  get currentMs(): number {
    if (this.samples === 0) return this.floorMs;
    return Math.round(Math.min(this.capMs, Math.max(this.floorMs, this.srtt + 4 * this.rttvar)));
  }

  /** One round trip that completed, in ms. */
  observe(ms: number): void {
    if (this.samples === 0) {
      this.srtt = ms;
      this.rttvar = ms / 2;
    } else {
      this.rttvar = 0.75 * this.rttvar + 0.25 * Math.abs(this.srtt - ms);
      this.srtt = 0.875 * this.srtt + 0.125 * ms;
    }
    this.samples++;
  }

  /**
   * Waits for the call at most the current deadline, or `atLeastMs` if longer (RedisDeadlineError
   * past it); measures it either way.
   */
  run<T>(call: Promise<T>, atLeastMs = 0): Promise<T> {
    const started = this.now();
    call.then(
      () => this.observe(this.now() - started),
      () => undefined, // a failed connection says nothing about how long Redis takes
    );
    return withDeadline(call, Math.max(atLeastMs, this.currentMs));
  }
}
