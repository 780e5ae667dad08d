import { Registry } from 'prom-client';
import { registerSnapshotGauges, type AiSnapshot, type DamSnapshot } from './snapshot-gauges';

describe('registerSnapshotGauges', () => {
  it('reads each gauge from its source at scrape time; what is not known leaves the gauge as it was', async () => {
    const registry = new Registry();
    let dam: DamSnapshot | null = null;
    const ai: AiSnapshot = { liveWorkers: 2, advertised: 100, measured: 64, rate: 66, depth: 12, waitMs: 180, throttledUntil: 0, ttftExcessMs: 0, marginMs: 40 };
    registerSnapshotGauges([registry], { dam: () => dam, ai: () => ai, breaker: () => 2 });
    const value = async (name: string, labels = '') => {
      const line = (await registry.metrics()).split('\n').find((l) => l.startsWith(`${name}${labels} `) || l.startsWith(`${name}${labels}{`));
      return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(' ') + 1));
    };
    // No dam snapshot yet: nothing set.
    expect(await value('td_dam_held')).toBe(0);
    expect(await value('td_breaker_state')).toBe(2);
    expect(await value('td_ai_throughput_per_second')).toBe(66);
    expect(await value('td_ai_estimated_wait_seconds')).toBe(0.18);
    expect(await value('td_ai_wait_margin_seconds')).toBe(0.04);
    dam = { held: 7, unbudgeted: 0, fallback: true, fallbackReason: 'oom', global: null, line: null, tiers: [{ name: 'pro', sessions: 3 }] };
    expect(await value('td_dam_held')).toBe(7);
    expect(await value('td_redis_out_of_memory')).toBe(1);
    expect(await value('td_dam_global_used')).toBe(0);
    dam = { ...dam, fallback: false, fallbackReason: null, global: { used: 1_500, capacity: 2_000, live: 2 } };
    expect(await value('td_dam_global_used')).toBe(1_500);
    expect(await value('td_redis_out_of_memory')).toBe(0);
    // Redis away again: the last known global view stays.
    dam = { ...dam, global: null };
    expect(await value('td_dam_global_used')).toBe(1_500);
    expect(await value('td_dam_tier_sessions', '{tier="pro"}')).toBe(3);
  });
});
