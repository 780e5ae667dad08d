import * as hdr from 'hdr-histogram-js';
import type { WaitSample } from './chat-client';

/** Latencies are recorded in microseconds up to 10 minutes, 3 significant digits. */
function histogram(): hdr.Histogram {
  return hdr.build({ lowestDiscernibleValue: 1, highestTrackableValue: 600_000_000, numberOfSignificantValueDigits: 3 });
}

export type Phase = 'streamOpen' | 'session' | 'post' | 'ttft' | 'done' | 'refusal' | 'refusalAfterOpening' | 'refusedAfterWait' | 'iteration';
export const PHASES: readonly Phase[] = ['streamOpen', 'session', 'post', 'ttft', 'done', 'refusal', 'refusalAfterOpening', 'refusedAfterWait', 'iteration'];

/** Most wait samples kept per kind: enough for the report's charts and medians. */
export const MAX_WAIT_SAMPLES = 50_000;

/** What waiting clients saw: the line's (a slot) and the AI queue's (a question), per wait. */
export interface Waits {
  sessions: WaitSample[];
  questions: WaitSample[];
}

/**
 * Refusals answered this long after the run started are also recorded as `refusalAfterOpening`:
 * a scenario that starts all its VUs at once (S0) opens with a burst of connections that two
 * shared cores take seconds to work through, and the whole run's p99 is then that burst's.
 */
export const OPENING_MS = 10_000;

export type Outcome = 'completed' | 'refused' | 'error' | 'interrupted';

export interface LatencySummary {
  count: number;
  min: number;
  mean: number;
  p50: number;
  p90: number;
  p95: number;
  p99: number;
  max: number;
}

export interface RoleSummary {
  iterations: number;
  outcomes: Record<Outcome, number>;
  /** `stream 200`, `stream 429 dam_full`, `post 503 ai_overloaded`, `0 session_timeout`, ... */
  statuses: Record<string, number>;
  /** Requests that got no HTTP answer or whose answer never came within its deadline. */
  status0: number;
  /** 429 / 503 answers (to the stream or to a question); an iteration may retry after one. */
  refused429: number;
  refused503: number;
  /** ms */
  latency: Record<Phase, LatencySummary>;
}

export interface Second {
  /** Seconds since the run started (end of this bucket). */
  t: number;
  vus: number;
  started: number;
  completed: number;
  refused429: number;
  refused503: number;
  status0: number;
  /** Every other failure: error events, other status codes. */
  errors: number;
  /** Waiting clients told `queued` this second: streams in the line, questions behind others in the AI queue. */
  queuedSessions?: number;
  queuedQuestions?: number;
  ttftP50: number | null;
  ttftP95: number | null;
  /** Extra figures sampled each second (dam used/capacity per gateway, ...). */
  extra: Record<string, number>;
}

class RoleMetrics {
  iterations = 0;
  outcomes: Record<Outcome, number> = { completed: 0, refused: 0, error: 0, interrupted: 0 };
  statuses = new Map<string, number>();
  status0 = 0;
  refused429 = 0;
  refused503 = 0;
  readonly hist = new Map<Phase, hdr.Histogram>(PHASES.map((p) => [p, histogram()]));

  summary(): RoleSummary {
    const latency = {} as Record<Phase, LatencySummary>;
    for (const p of PHASES) {
      const h = this.hist.get(p) as hdr.Histogram;
      const ms = (v: number): number => Math.round(v / 10) / 100;
      latency[p] = {
        count: h.totalCount,
        min: h.totalCount ? ms(h.minNonZeroValue) : 0,
        mean: ms(h.mean),
        p50: ms(h.getValueAtPercentile(50)),
        p90: ms(h.getValueAtPercentile(90)),
        p95: ms(h.getValueAtPercentile(95)),
        p99: ms(h.getValueAtPercentile(99)),
        max: ms(h.maxValue),
      };
    }
    return {
      iterations: this.iterations,
      outcomes: { ...this.outcomes },
      statuses: Object.fromEntries([...this.statuses].sort((a, b) => b[1] - a[1])),
      status0: this.status0,
      refused429: this.refused429,
      refused503: this.refused503,
      latency,
    };
  }

  destroy(): void {
    for (const h of this.hist.values()) h.destroy();
  }
}

function nearestRank(sorted: number[], p: number): number | null {
  if (sorted.length === 0) return null;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))] as number;
}

/** Everything a run measures: per role (user, normal, abuser) and per second. */
export class Metrics {
  private readonly roles = new Map<string, RoleMetrics>();
  readonly seconds: Second[] = [];
  private bucket = this.emptyBucket();
  private bucketTtft: number[] = [];
  droppedIterations = 0;
  readonly waits: Waits = { sessions: [], questions: [] };

  constructor(private readonly startedAt: number) {}

  private emptyBucket(): Omit<Second, 't' | 'vus' | 'ttftP50' | 'ttftP95' | 'extra'> {
    return { started: 0, completed: 0, refused429: 0, refused503: 0, status0: 0, errors: 0, queuedSessions: 0, queuedQuestions: 0 };
  }

  /** A waiting client was told `queued` (its first, for a stream or a question). */
  queued(kind: 'session' | 'question'): void {
    if (kind === 'session') this.bucket.queuedSessions = (this.bucket.queuedSessions ?? 0) + 1;
    else this.bucket.queuedQuestions = (this.bucket.queuedQuestions ?? 0) + 1;
  }

  /** A wait ended with a slot (or the first token); queuedAt is its performance.now() when told `queued`. */
  waited(kind: 'session' | 'question', w: Omit<WaitSample, 'at'>, queuedAt: number): void {
    const list = kind === 'session' ? this.waits.sessions : this.waits.questions;
    if (list.length >= MAX_WAIT_SAMPLES) return;
    const at = Date.now() - (performance.now() - queuedAt) - this.startedAt;
    list.push({ at: Math.round(at), position: w.position, etaMs: w.etaMs, waitedMs: Math.round(w.waitedMs) });
  }

  private role(name: string): RoleMetrics {
    let r = this.roles.get(name);
    if (!r) {
      r = new RoleMetrics();
      this.roles.set(name, r);
    }
    return r;
  }

  started(role: string): void {
    this.role(role).iterations++;
    this.bucket.started++;
  }

  latency(role: string, phase: Phase, ms: number): void {
    const r = this.role(role);
    const us = Math.max(1, Math.round(ms * 1_000));
    (r.hist.get(phase) as hdr.Histogram).recordValue(us);
    if (phase === 'refusal' && Date.now() - this.startedAt >= OPENING_MS) (r.hist.get('refusalAfterOpening') as hdr.Histogram).recordValue(us);
    if (phase === 'ttft') this.bucketTtft.push(ms);
  }

  /** A status seen: `stream 200`, `post 429 user_rate_limited`, `0 session_timeout`. */
  status(role: string, key: string): void {
    const r = this.role(role);
    r.statuses.set(key, (r.statuses.get(key) ?? 0) + 1);
  }

  /** A 429/503 answer (an iteration may see several before its question is accepted). */
  refusal(role: string, kind: '429' | '503'): void {
    const r = this.role(role);
    if (kind === '503') {
      r.refused503++;
      this.bucket.refused503++;
    } else {
      r.refused429++;
      this.bucket.refused429++;
    }
  }

  outcome(role: string, outcome: Outcome, kind?: 'status0'): void {
    const r = this.role(role);
    r.outcomes[outcome]++;
    switch (outcome) {
      case 'completed':
        this.bucket.completed++;
        break;
      case 'refused':
        break;
      case 'error':
        if (kind === 'status0') {
          r.status0++;
          this.bucket.status0++;
        } else {
          this.bucket.errors++;
        }
        break;
      case 'interrupted':
        break;
    }
  }

  /** Closes the current one-second bucket. */
  tick(vus: number, extra: Record<string, number> = {}): Second {
    const sorted = this.bucketTtft.sort((a, b) => a - b);
    const s: Second = {
      t: Math.round((Date.now() - this.startedAt) / 100) / 10,
      vus,
      ...this.bucket,
      ttftP50: nearestRank(sorted, 50),
      ttftP95: nearestRank(sorted, 95),
      extra,
    };
    this.seconds.push(s);
    this.bucket = this.emptyBucket();
    this.bucketTtft = [];
    return s;
  }

  /** Totals so far (for the progress bar). */
  totals(): { completed: number; refused: number; status0: number; errors: number } {
    let completed = 0;
    let refused = 0;
    let status0 = 0;
    let errors = 0;
    for (const r of this.roles.values()) {
      completed += r.outcomes.completed;
      refused += r.refused429 + r.refused503;
      status0 += r.status0;
      errors += r.outcomes.error;
    }
    return { completed, refused, status0, errors };
  }

  summaries(): Record<string, RoleSummary> {
    return Object.fromEntries([...this.roles].map(([k, v]) => [k, v.summary()]));
  }

  destroy(): void {
    for (const r of this.roles.values()) r.destroy();
  }
}
