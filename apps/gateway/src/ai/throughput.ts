import type { WorkerHeartbeat } from '@traffic-dam/ai-bridge';

export interface ThroughputView {
  liveWorkers: number;
  /** Answers/s the workers declare they can produce (the backend's capacity). */
  advertised: number;
  /** Answers/s they actually completed lately. */
  measured: number;
  /** What the AI gate divides the queue depth by. */
  rate: number;
  /** Answers the workers are streaming now (not waiting in line). */
  answering: number;
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
  const answering = workers.reduce((a, w) => a + w.answering, 0);
  return { liveWorkers: workers.length, advertised, measured, rate, answering };
}

/**
 * How many attempts per answer start the refused are brought back at: enough that the queue
 * refills the moment it has room (the AI stays saturated), few enough that refusals stay a small
 * share of a gateway's work.
 */
export const RETRY_ATTEMPTS_PER_START = 3;

/** Longest Retry-After the AI gate gives, in s; a session idles out after 120 s by default. */
export const AI_RETRY_AFTER_MAX_SEC = 60;

export interface AiBacklog {
  /** The gate's estimate of the wait in line, in ms (-1: unknown). */
  waitMs: number;
  /** Sessions that may ask a question now, cluster-wide (the dam's global count), the refused included. */
  contenders: number;
  /** Answers/s the gate counts on (0: unknown). */
  rate: number;
}

/**
 * Retry-After (s) for a question refused by the AI gate. The overage alone is under a second for
 * nearly every refusal, and the drain time of the line is about a second: with a thousand
 * sessions per gateway and forty answers a second, every refused session came back the next
 * second (a retry storm that saturated a gateway in the experiment). So the base is the longer of
 * the line's drain time and the time in which the sessions competing for the AI would come back
 * at RETRY_ATTEMPTS_PER_START per answer start (contenders / (3 x rate)); the Retry-After is spread
 * uniformly over [base, 2 x base] so they do not come back together. Unknown: 1-2 s.
 */
export function aiRetryAfterSec(b: AiBacklog, random: () => number = Math.random): number {
  const drainSec = b.waitMs < 0 ? 1 : b.waitMs / 1000;
  const contentionSec = b.rate > 0 ? b.contenders / (RETRY_ATTEMPTS_PER_START * b.rate) : 1;
  const base = Math.min(AI_RETRY_AFTER_MAX_SEC / 2, Math.max(1, Math.ceil(Math.max(drainSec, contentionSec))));
  return base + Math.floor(random() * (base + 1));
}
