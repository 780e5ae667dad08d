import { Gauge, type Registry } from 'prom-client';

export interface AiSnapshot {
  liveWorkers: number;
  advertised: number;
  measured: number;
  rate: number;
  depth: number;
  waitMs: number;
  throttledUntil: number;
  ttftExcessMs: number;
  /** What the gate adds to every estimate: the p95 of how much later than estimated first tokens came. */
  marginMs: number;
}

export interface DamSnapshot {
  held: number;
  unbudgeted: number;
  fallback: boolean;
  /** Why the last call to Redis failed while in fallback. */
  fallbackReason: string | null;
  global: { used: number; capacity: number; live: number } | null;
  line: { waiting: number; length: number; turnoverPerSec: number | null } | null;
  tiers: Array<{ name: string; sessions: number }>;
}

/** Where the snapshot gauges read from, set once the services that hold the state exist. */
export interface SnapshotSources {
  dam: () => DamSnapshot | null;
  ai: () => AiSnapshot | null;
  breaker: () => number;
}

/**
 * The gauges read on every scrape from what the services already hold: no Redis call in /metrics.
 */
export function registerSnapshotGauges(registers: Registry[], src: SnapshotSources): void {
  const snapshotGauge = <S>(name: string, help: string, snapshot: () => S | null, read: (s: S) => number | null) =>
    new Gauge({
      name,
      help,
      registers,
      collect() {
        const s = snapshot();
        const v = s === null ? null : read(s);
        if (v !== null) this.set(v);
      },
    });
  const dam = src.dam;
  const gauge = (name: string, help: string, read: (s: DamSnapshot) => number | null) => snapshotGauge(name, help, dam, read);
  gauge('td_dam_held', 'Sessions this instance holds on the budget', (s) => s.held);
  gauge('td_dam_unbudgeted', 'Sessions admitted without a slot (shadow mode over budget)', (s) => s.unbudgeted);
  gauge('td_dam_fallback_active', '1 while Redis is unreachable and the local share decides', (s) => (s.fallback ? 1 : 0));
  gauge(
    'td_redis_out_of_memory',
    "1 while Redis refuses this instance's heartbeat writes at its memory limit (maxmemory with noeviction); the local share decides meanwhile",
    (s) => (s.fallback && s.fallbackReason === 'oom' ? 1 : 0),
  );
  gauge('td_dam_global_used', 'Sessions held across live instances, as last seen from Redis', (s) => s.global?.used ?? null);
  gauge('td_dam_global_capacity', 'Global budget: slots per instance x live instances, as last seen', (s) => s.global?.capacity ?? null);
  gauge('td_dam_live_instances', 'Instances with a live heartbeat, as last seen', (s) => s.global?.live ?? null);
  gauge('td_dam_line_waiting', 'Streams waiting in the line on this instance', (s) => s.line?.waiting ?? null);
  gauge('td_dam_line_length', 'Waiters in the line across all instances, as of the last heartbeat', (s) => s.line?.length ?? null);
  gauge('td_dam_turnover_per_second', 'Session slots freed per second across the cluster (what the line moves at), when measured', (s) => s.line?.turnoverPerSec ?? null);
  new Gauge({
    name: 'td_dam_tier_sessions',
    help: 'Sessions this instance holds, by priority tier (DAM_TIERS; one tier, default, without)',
    labelNames: ['tier'],
    registers,
    collect() {
      for (const t of dam()?.tiers ?? []) this.set({ tier: t.name }, t.sessions);
    },
  });
  const ai = src.ai;
  const aiGauge = (name: string, help: string, read: (s: AiSnapshot) => number) => snapshotGauge(name, help, ai, read);
  snapshotGauge(
    'td_breaker_state',
    'Circuit breaker toward the AI worker: 0 closed, 1 half-open, 2 open',
    src.breaker,
    (v) => v,
  );
  aiGauge('td_ai_live_workers', 'AI workers with a live heartbeat', (s) => s.liveWorkers);
  aiGauge('td_ai_throughput_per_second', 'Answers/s the AI gate divides the queue by: learned from the workers (their service rate while they had a line), at most the declared capacity', (s) => s.rate);
  aiGauge('td_ai_declared_capacity_per_second', 'Answer starts/s the workers declare (AI_CAPACITY_PER_SEC): the ceiling of the learned rate', (s) => s.advertised);
  aiGauge('td_ai_measured_throughput_per_second', 'Answers/s the workers started over their last 5 s', (s) => s.measured);
  aiGauge('td_ai_throttled_seconds', 'Seconds before any worker may start an answer (they honour a model server Retry-After); 0 when not throttled', (s) => Math.max(0, s.throttledUntil - Date.now()) / 1000);
  aiGauge('td_ai_ttft_excess_seconds', 'Time to first token beyond the model usual, added to every estimated wait', (s) => s.ttftExcessMs / 1000);
  aiGauge('td_ai_queue_depth', 'Questions queued or in progress, as last seen by this instance', (s) => s.depth);
  aiGauge('td_ai_wait_margin_seconds', 'What the AI gate adds to every estimated wait: the p95 of how much later than estimated the first tokens of admitted questions came', (s) => s.marginMs / 1000);
  aiGauge('td_ai_estimated_wait_seconds', 'Estimated wait of the last question this instance gated', (s) => Math.max(0, s.waitMs) / 1000);
}
