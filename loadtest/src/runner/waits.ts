import type { WaitSample } from './chat-client';

/** What the waits of one kind (a slot, a question) add up to. */
export interface WaitFigures {
  count: number;
  waitedP50: number | null;
  waitedP95: number | null;
  waitedMax: number | null;
  /** Waits that were told an estimate (the line had measured its turnover). */
  estimated: number;
  /** Median of |estimate - actual|, ms. */
  etaMedianAbsErrorMs: number | null;
  /** That median over the median actual wait of the same waits: "within 25% of the actual wait". */
  etaMedianAbsErrorShare: number | null;
  /** Median of |estimate - actual| / actual, per wait. */
  etaMedianRelativeError: number | null;
}

function quantile(sorted: number[], p: number): number | null {
  if (sorted.length === 0) return null;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))] as number;
}

const asc = (xs: number[]): number[] => [...xs].sort((a, b) => a - b);

/**
 * The waits' figures. The estimate is judged only where a wait was long enough to judge one (at
 * least minWaitMs): a wait of a few ms is over before any estimate means much, and its relative
 * error is noise.
 */
export function waitFigures(samples: WaitSample[], minWaitMs = 1_000): WaitFigures {
  const waited = asc(samples.map((s) => s.waitedMs));
  const judged = samples.filter((s): s is WaitSample & { etaMs: number } => s.etaMs !== null && s.waitedMs >= minWaitMs);
  const absErr = asc(judged.map((s) => Math.abs(s.etaMs - s.waitedMs)));
  const rel = asc(judged.map((s) => Math.abs(s.etaMs - s.waitedMs) / s.waitedMs));
  const actual = asc(judged.map((s) => s.waitedMs));
  const mdae = quantile(absErr, 50);
  const medActual = quantile(actual, 50);
  return {
    count: samples.length,
    waitedP50: quantile(waited, 50),
    waitedP95: quantile(waited, 95),
    waitedMax: waited.length ? (waited[waited.length - 1] as number) : null,
    estimated: judged.length,
    etaMedianAbsErrorMs: mdae,
    etaMedianAbsErrorShare: mdae !== null && medActual ? Math.round((mdae / medActual) * 1_000) / 1_000 : null,
    etaMedianRelativeError: rel.length ? Math.round((quantile(rel, 50) as number) * 1_000) / 1_000 : null,
  };
}
