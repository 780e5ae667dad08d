import type { WorkerHeartbeat } from '@traffic-dam/ai-bridge';

export interface ThroughputView {
  liveWorkers: number;
  /** Answers/s the workers declare they can produce (the backend's capacity). */
  advertised: number;
  /** Answers/s they actually completed lately. */
  measured: number;
  /** What the AI gate divides the queue depth by. */
  rate: number;
}

/**
 * The gate's throughput: the declared capacity, unless the queue is building up faster than the
 * workers drain it, in which case what they measurably do is the truth (a slowed backend).
 * Measured alone would refuse a burst after a quiet minute, when nothing was measured.
 */
export function estimateThroughput(workers: WorkerHeartbeat[], lastDepth: number): ThroughputView {
  const measured = workers.reduce((a, w) => a + w.throughputPerSec, 0);
  // capacityPerSec is the backend's global limit, the same number in every heartbeat.
  const advertised = workers.reduce((a, w) => Math.max(a, w.capacityPerSec), 0);
  const saturated = measured > 0 && lastDepth > 2 * measured;
  const rate = workers.length === 0 ? 0 : saturated ? Math.min(measured, advertised || measured) : advertised;
  return { liveWorkers: workers.length, advertised, measured, rate };
}

/**
 * Retry-After (s) for a question refused by the AI gate. Not the overage alone, which is under a
 * second for nearly every refusal and brings all refused sessions back together the next second
 * (a retry storm that saturated a gateway in the experiment): the time the estimated backlog
 * needs to drain, spread uniformly over [drain, 2 x drain]. An unknown wait (no rate) is 1-2 s.
 */
export function aiRetryAfterSec(estimatedWaitMs: number, random: () => number = Math.random): number {
  const drainSec = estimatedWaitMs < 0 ? 1 : Math.min(30, Math.max(1, Math.ceil(estimatedWaitMs / 1000)));
  return drainSec + Math.floor(random() * (drainSec + 1));
}
