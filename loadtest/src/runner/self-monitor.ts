import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks';

export interface SelfReport {
  /** The runner's CPU, in % of one core: mean over the run, and the share of seconds at >= 90 %. */
  cpuMeanPercent: number;
  cpuMaxPercent: number;
  secondsAtCpuLimit: number;
  /** Event-loop delay of the runner, ms. */
  eventLoopLag: { p50: number; p99: number; max: number };
  /** True when the runner, not the server, may have set the pace: its timings then read high. */
  bottleneck: boolean;
  reasons: string[];
}

/** Thresholds past which the runner's own figures are suspect. */
const CPU_LIMIT_PERCENT = 90;
const CPU_LIMIT_SHARE = 0.25;
const LAG_P99_LIMIT_MS = 100;
/** The histogram's sampling timer period; its records include it, so it is subtracted. */
const RESOLUTION_MS = 10;

/**
 * Watches the load runner itself: a single-threaded client that saturates its core or blocks its
 * event loop measures its own queueing as the server's latency.
 */
export class SelfMonitor {
  private readonly eld: IntervalHistogram = monitorEventLoopDelay({ resolution: RESOLUTION_MS });
  /** Reset every second, for the per-second series. */
  private readonly eldSecond: IntervalHistogram = monitorEventLoopDelay({ resolution: RESOLUTION_MS });
  private lastCpu = process.cpuUsage();
  private lastAt = performance.now();
  private readonly cpu: number[] = [];

  start(): void {
    this.eld.enable();
    this.eldSecond.enable();
    this.lastCpu = process.cpuUsage();
    this.lastAt = performance.now();
  }

  /** Call once a second: returns the CPU % of one core since the last call. */
  sample(): { cpuPercent: number; lagMaxMs: number } {
    const now = performance.now();
    const used = process.cpuUsage(this.lastCpu);
    const pct = ((used.user + used.system) / 1_000 / Math.max(1, now - this.lastAt)) * 100;
    this.lastCpu = process.cpuUsage();
    this.lastAt = now;
    this.cpu.push(pct);
    const lagMaxMs = Math.max(0, Math.round(this.eldSecond.max / 1e6 - RESOLUTION_MS));
    this.eldSecond.reset();
    return { cpuPercent: Math.round(pct), lagMaxMs };
  }

  stop(): SelfReport {
    this.eld.disable();
    this.eldSecond.disable();
    const ms = (ns: number): number => Math.max(0, Math.round(ns / 1e4) / 100 - RESOLUTION_MS);
    const lag = { p50: ms(this.eld.percentile(50)), p99: ms(this.eld.percentile(99)), max: ms(this.eld.max) };
    const n = Math.max(1, this.cpu.length);
    const atLimit = this.cpu.filter((c) => c >= CPU_LIMIT_PERCENT).length;
    const reasons: string[] = [];
    if (atLimit / n >= CPU_LIMIT_SHARE) {
      reasons.push(`the runner used >= ${CPU_LIMIT_PERCENT}% of a core in ${atLimit} of ${this.cpu.length} seconds`);
    }
    if (lag.p99 > LAG_P99_LIMIT_MS) reasons.push(`the runner's event-loop delay p99 was ${lag.p99} ms (> ${LAG_P99_LIMIT_MS} ms)`);
    return {
      cpuMeanPercent: Math.round(this.cpu.reduce((a, b) => a + b, 0) / n),
      cpuMaxPercent: Math.round(Math.max(0, ...this.cpu)),
      secondsAtCpuLimit: atLimit,
      eventLoopLag: lag,
      bottleneck: reasons.length > 0,
      reasons,
    };
  }
}
