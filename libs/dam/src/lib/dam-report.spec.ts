import type { Redis } from 'ioredis';
import type { StatusReply } from './budget.store';
import { DamReport, type ReportSources } from './dam-report';
import { LocalHoldings } from './local-holdings';
import { resolveDamOptions, type DamOptions } from './options';

const tiers = [
  { name: 'gold', reservedShare: 0.2 },
  { name: 'free', reservedShare: 0 },
];

function setup(o: Partial<DamOptions>, status: () => Promise<StatusReply>) {
  const options = resolveDamOptions({ redis: null as unknown as Redis, instanceId: 'i1', slotsPerInstance: 10, line: { maxWaiters: 5 }, ...o });
  const local = new LocalHoldings(options);
  let asked = 0;
  const beats: ReportSources['beats'] = {
    inFallback: true,
    fallbackSince: 5_000,
    fallbackReason: 'timeout',
    lastGlobal: { used: 3, capacity: 20, live: 2, at: 4_000 },
    generation: 'g3',
  };
  const line = { size: 2, lineLength: 7, turnoverPerSec: 1.5 };
  const tierNames = options.tiers.map((t) => t.name);
  const store = {
    status: () => {
      asked++;
      return status();
    },
  };
  const report = new DamReport(options, { store, local, beats, line, tierNames });
  return { report, local, asked: () => asked };
}

const answer = (): Promise<StatusReply> =>
  Promise.resolve({ used: 9, capacity: 30, live: 3, instances: ['i1', 'i2', 'i3'], lineLength: 12, tiers: new Map([[0, 4]]), freed: 0, now: 0 });

describe('DamReport', () => {
  it("snapshots this instance's holdings, per tier by name, with what it last heard of Redis", () => {
    const { report, local } = setup({ tiers }, answer);
    local.take(null, 0, true);
    local.take(null, 1, true);
    local.take(null, 1, true);
    local.shadowAdmitted();
    expect(report.snapshot()).toEqual({
      held: 3,
      unbudgeted: 1,
      fallback: true,
      fallbackReason: 'timeout',
      global: { used: 3, capacity: 20, live: 2, at: 4_000 },
      line: { waiting: 2, length: 7, turnoverPerSec: 1.5 },
      tiers: [
        { name: 'gold', sessions: 1 },
        { name: 'free', sessions: 2 },
      ],
    });
  });

  it("reports the cluster as Redis sees it, its tiers' sessions cluster-wide when shares are reserved", async () => {
    const { report, local } = setup({ tiers }, answer);
    local.take(null, 1, true);
    const s = await report.status();
    expect(s.global).toMatchObject({ used: 9, capacity: 30, live: 3, instances: ['i1', 'i2', 'i3'], stale: false });
    expect(s.line).toEqual({ enabled: true, maxWaiters: 5, maxWaitMs: 60_000, waitingHere: 2, length: 12, turnoverPerSec: 1.5 });
    expect(s.tiers).toEqual([
      { name: 'gold', reservedShare: 0.2, sessions: 4 },
      { name: 'free', reservedShare: 0, sessions: 0 },
    ]);
    expect(s).toMatchObject({ instanceId: 'i1', held: 1, ceiling: 10, share: 10, generation: 'g3' });
    expect(s.fallback).toEqual({ active: true, since: 5_000, policy: 'local', reason: 'timeout' });
  });

  it("counts this instance's tier sessions when no share is reserved", async () => {
    const { report, local } = setup({ tiers: [{ name: 'a' }, { name: 'b' }] }, answer);
    local.take(null, 1, true);
    expect((await report.status()).tiers.map((t) => t.sessions)).toEqual([0, 1]);
  });

  it('reports what it last saw, marked stale, when Redis fails', async () => {
    const { report, local } = setup({ tiers }, () => Promise.reject(new Error('connect ECONNREFUSED')));
    local.take(null, 0, true);
    const s = await report.status();
    expect(s.global).toEqual({ used: 3, capacity: 20, live: 2, at: 4_000, stale: true });
    expect(s.line.length).toBe(7);
    expect(s.tiers.map((t) => t.sessions)).toEqual([1, 0]);
  });

  it('does not wait for a Redis that never answers', async () => {
    jest.useFakeTimers();
    try {
      const { report } = setup({}, () => new Promise<StatusReply>(() => undefined));
      const pending = report.status();
      // The deadline (200 ms at the floor), then the turn withDeadline gives a reply already read.
      await jest.advanceTimersByTimeAsync(201);
      expect((await pending).global?.stale).toBe(true);
    } finally {
      jest.useRealTimers();
    }
  });

  it('does not ask Redis with the dam off', async () => {
    const { report, asked } = setup({ mode: 'off' }, answer);
    expect((await report.status()).global?.stale).toBe(true);
    expect(asked()).toBe(0);
  });
});
