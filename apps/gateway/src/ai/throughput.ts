import type { WorkerHeartbeat } from '@traffic-dam/ai-bridge';

export interface ThroughputView {
  liveWorkers: number;
  /** The declared ceiling on answer starts/s (the workers' AI_CAPACITY_PER_SEC): never counted past. */
  advertised: number;
  /** Answers/s the workers started lately (what was asked of them, or their pace when saturated). */
  measured: number;
  /** What the AI gate divides the queue depth by: the rate learned from the workers, at most the ceiling. */
  rate: number;
  /** Answers the workers are streaming now (not waiting in line). */
  answering: number;
  /** Epoch ms before which no worker may start an answer (every one honours a model server's Retry-After); 0 otherwise. */
  throttledUntil: number;
  /** ms the model takes to its first token beyond its usual: it queues inside the model server. */
  ttftExcessMs: number;
}

export const NO_WORKERS: ThroughputView = { liveWorkers: 0, advertised: 0, measured: 0, rate: 0, answering: 0, throttledUntil: 0, ttftExcessMs: 0 };

/** How the learned rate moves per heartbeat: toward a measured service rate, back toward the ceiling while the worker keeps up. */
export const LEARNING = {
  /** Weight of a new service-rate sample (a worker with a line): the rate follows a slowed model within a few beats. */
  follow: 0.5,
  /** Share of the gap to the ceiling regained per beat while a worker has no line: an old low estimate fades in ~20 beats. */
  recover: 0.1,
  /** Share of the gap regained per beat by the usual time to first token when the model gets slower. */
  ttftFloorRise: 0.02,
} as const;

interface WorkerEstimate {
  rate: number;
  ts: number;
  ttftFloor: number | null;
  /** Its service rate was measured at least once: until then the rate is only the declared ceiling. */
  measured: boolean;
}

/**
 * The AI gate's throughput, learned from what the workers measurably do (their heartbeats'
 * startsPerSec, serviceRatePerSec, ttftMs, answering, throttledUntil), per worker and smoothed.
 *
 * A worker's start rate alone says what was asked of it: after a quiet spell it is tiny, and a
 * queue divided by it refused questions on a near-idle stack ("Estimated wait 20.0 s" with six in
 * flight). Only the rate of a worker that had a line (serviceRatePerSec) measures what it can do,
 * and it moves the estimate; without a line the estimate only rises (to what it did, and back
 * toward the declared ceiling), so low demand never reads as low capacity. A new worker starts at
 * the ceiling until its first measured service rate, which it then takes at once (later ones are
 * followed halfway per beat); one whose heartbeat is gone is forgotten. The gate itself also checks
 * the line's own wait (ask.lua.ts), so a rate still too high meanwhile cannot stretch its promise.
 */
export class ThroughputLearner {
  private readonly workers = new Map<string, WorkerEstimate>();

  update(heartbeats: WorkerHeartbeat[], now: number): ThroughputView {
    if (heartbeats.length === 0) {
      this.workers.clear();
      return NO_WORKERS;
    }
    // capacityPerSec is the backend's global limit, the same number in every heartbeat.
    const ceiling = heartbeats.reduce((a, w) => Math.max(a, w.capacityPerSec), 0);
    const live = new Set<string>();
    for (const hb of heartbeats) {
      live.add(hb.workerId);
      const est = this.workers.get(hb.workerId) ?? { rate: ceiling, ts: -1, ttftFloor: null, measured: false };
      // The same beat read twice (the gate refreshes faster than workers beat) teaches nothing.
      if (hb.ts !== est.ts) learn(est, hb, ceiling);
      this.workers.set(hb.workerId, est);
    }
    for (const id of this.workers.keys()) if (!live.has(id)) this.workers.delete(id);

    const open = heartbeats.filter((w) => w.throttledUntil <= now);
    // Every worker honours a Retry-After: nothing starts before the first one ends.
    const throttledUntil = open.length === 0 ? Math.min(...heartbeats.map((w) => w.throttledUntil)) : 0;
    const counted = open.length > 0 ? open : heartbeats;
    const learned = counted.reduce((a, w) => a + (this.workers.get(w.workerId)?.rate ?? 0), 0);
    const excess = counted
      .map((w) => {
        const floor = this.workers.get(w.workerId)?.ttftFloor ?? null;
        return w.ttftMs === null || floor === null ? 0 : Math.max(0, w.ttftMs - floor);
      })
      .reduce((a, x) => Math.min(a, x), Infinity);
    return {
      liveWorkers: heartbeats.length,
      advertised: ceiling,
      measured: heartbeats.reduce((a, w) => a + w.startsPerSec, 0),
      rate: Math.min(ceiling, learned),
      answering: heartbeats.reduce((a, w) => a + w.answering, 0),
      throttledUntil,
      ttftExcessMs: Math.round(excess),
    };
  }
}

function learn(est: WorkerEstimate, hb: WorkerHeartbeat, ceiling: number): void {
  est.ts = hb.ts;
  // A beat written while the worker honoured a Retry-After measured the pause, not the model.
  const throttled = hb.throttledUntil > hb.ts;
  if (!throttled && hb.serviceRatePerSec !== null) {
    // The first measurement replaces the declared ceiling: a new worker under an opening burst
    // that delivers less than it declares is believed at once, not over several beats.
    est.rate = est.measured ? est.rate + LEARNING.follow * (hb.serviceRatePerSec - est.rate) : hb.serviceRatePerSec;
    est.measured = true;
  } else if (!throttled) {
    est.rate = Math.max(est.rate + LEARNING.recover * (ceiling - est.rate), hb.startsPerSec);
  }
  est.rate = Math.min(Math.max(0, est.rate), ceiling);
  if (hb.ttftMs !== null) {
    if (est.ttftFloor === null || hb.ttftMs < est.ttftFloor) est.ttftFloor = hb.ttftMs;
    else est.ttftFloor += LEARNING.ttftFloorRise * (hb.ttftMs - est.ttftFloor);
  }
}

/** The wait in ms before any answer can start at `now`, whatever the line: a Retry-After, a model slower to its first token. */
export function extraWaitMs(v: ThroughputView, now: number): number {
  return Math.max(0, v.throttledUntil - now) + v.ttftExcessMs;
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
  /** ms before which no answer can start (the workers honour a model server's Retry-After); 0 if none. */
  notBeforeMs?: number;
}

/**
 * Retry-After (s) for a question refused by the AI gate. The overage alone is under a second for
 * nearly every refusal, and the drain time of the line is about a second: with a thousand
 * sessions per gateway and forty answers a second, every refused session came back the next
 * second (a retry storm that saturated a gateway in the experiment). So the base is the longer of
 * the line's drain time and the time in which the sessions competing for the AI would come back
 * at RETRY_ATTEMPTS_PER_START per answer start (contenders / (3 x rate)); the Retry-After is spread
 * uniformly over [base, 2 x base] so they do not come back together. Unknown: 1-2 s. While the
 * workers honour a model server's Retry-After, no client is told to come back before it ends.
 */
export function aiRetryAfterSec(b: AiBacklog, random: () => number = Math.random): number {
  const drainSec = b.waitMs < 0 ? 1 : b.waitMs / 1000;
  const contentionSec = b.rate > 0 ? b.contenders / (RETRY_ATTEMPTS_PER_START * b.rate) : 1;
  const base = Math.min(AI_RETRY_AFTER_MAX_SEC / 2, Math.max(1, Math.ceil(Math.max(drainSec, contentionSec))));
  const notBefore = Math.ceil((b.notBeforeMs ?? 0) / 1000);
  return Math.min(AI_RETRY_AFTER_MAX_SEC, Math.max(notBefore, base + Math.floor(random() * (base + 1))));
}
