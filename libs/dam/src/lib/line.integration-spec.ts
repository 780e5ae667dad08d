import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { startTestRedis, waitFor, type RedisHandle } from '@traffic-dam/stack';
import { Dam, type AdmitResult, type Lease, type Waiter, type WaitOutcome } from '../index';
import type { DamOptions } from './options';

function admissionClient(url: string): Redis {
  const r = new Redis(url, { enableOfflineQueue: false, autoResendUnfulfilledCommands: false, maxRetriesPerRequest: 0 });
  r.on('error', () => undefined);
  return r;
}

/** A waiter and whether (and how) its outcome settled, readable without awaiting. */
interface Watched {
  waiter: Waiter<Lease>;
  dam: Dam;
  outcome: WaitOutcome<Lease> | null;
  settledAt: number;
}

let settleCounter = 0;
function watch(dam: Dam, r: AdmitResult): Watched {
  if (r.admitted || r.reason !== 'queued') throw new Error(`expected queued, got ${JSON.stringify({ admitted: r.admitted, reason: r.admitted ? null : r.reason })}`);
  const w: Watched = { waiter: r.waiter, dam, outcome: null, settledAt: 0 };
  void r.waiter.outcome.then((o) => {
    w.outcome = o;
    w.settledAt = ++settleCounter;
  });
  return w;
}

function lease(r: AdmitResult): Lease {
  if (!r.admitted) throw new Error(`refused: ${r.reason}`);
  return r.lease;
}

describe('the waiting line against real Redis', () => {
  let redis: RedisHandle;
  let raw: Redis;
  const clients: Redis[] = [];
  const dams: Dam[] = [];

  async function dam(id: string, o: Partial<DamOptions> = {}): Promise<Dam> {
    const client = admissionClient(redis.url);
    clients.push(client);
    await new Promise<void>((resolve) => client.once('ready', () => resolve()));
    const d = new Dam({
      redis: client,
      instanceId: id,
      heartbeatMs: 200,
      heartbeatTtlMs: 600,
      redisTimeoutMs: 2_000,
      line: { maxWaiters: 1_000, maxWaitMs: 60_000, turnoverWindowMs: 2_000 },
      ...o,
    });
    dams.push(d);
    await d.start();
    return d;
  }

  async function global(d: Dam): Promise<{ used: number; capacity: number; length: number }> {
    const s = await d.status();
    return { used: s.global?.used ?? -1, capacity: s.global?.capacity ?? -1, length: s.line.length };
  }

  beforeAll(async () => {
    redis = await startTestRedis(mkdtempSync(join(tmpdir(), 'td-line-')));
    raw = new Redis(redis.url);
  });

  afterEach(async () => {
    await Promise.all(dams.splice(0).map((d) => d.stop()));
    for (const c of clients.splice(0)) c.disconnect();
    await raw.flushall();
  });

  afterAll(async () => {
    raw.disconnect();
    await redis.stop();
  });

  it('one line across two instances: positions 1..n in arrival order, no gaps; each released slot goes to the head, in order', async () => {
    const a = await dam('order-a', { slotsPerInstance: 5, instanceCeiling: 10 });
    const b = await dam('order-b', { slotsPerInstance: 5, instanceCeiling: 10 });
    const sessions = await Promise.all(Array.from({ length: 10 }, (_, i) => (i % 2 ? a : b).admit()));
    const leases = sessions.map(lease);
    // 40 arrivals at once, both instances: each queued with a distinct position, 1..40.
    const results = await Promise.all(Array.from({ length: 40 }, (_, i) => ((i * 7) % 3 ? a : b).admit(null, { waitMs: 30_000 }).then((r) => ({ d: (i * 7) % 3 ? a : b, r }))));
    const waiting = results.map(({ d, r }) => watch(d, r));
    expect(waiting.map((w) => w.waiter.position).sort((x, y) => x - y)).toEqual(Array.from({ length: 40 }, (_, i) => i + 1));
    expect(await global(a)).toEqual({ used: 10, capacity: 10, length: 40 });
    const byPosition = [...waiting].sort((x, y) => x.waiter.position - y.waiter.position);
    // Sessions end one at a time, on either instance: each time exactly the head is admitted.
    for (let k = 0; k < 40; k++) {
      const l = k < 10 ? (leases[k] as Lease) : (byPosition[k - 10]?.outcome as { lease: Lease }).lease;
      l.release();
      await waitFor(`waiter ${k + 1} admitted`, () => byPosition[k]?.outcome !== null, 5_000);
      expect(byPosition[k]?.outcome?.admitted).toBe(true);
      expect(byPosition.filter((w) => w.outcome !== null)).toHaveLength(k + 1);
      const g = await global(a);
      expect(g.used).toBe(10);
      expect(g.length).toBe(39 - k);
    }
    for (const w of byPosition) if (w.outcome?.admitted) (w.outcome as { lease: Lease }).lease.release();
    await waitFor('all slots back', async () => (await global(a)).used === 0);
  });

  it('a new arrival queues behind existing waiters, even when it lands on the instance whose slot just freed', async () => {
    const a = await dam('behind-a', { slotsPerInstance: 1 });
    const b = await dam('behind-b', { slotsPerInstance: 1 });
    const la = lease(await a.admit());
    lease(await b.admit());
    const first = watch(b, await b.admit(null, { waitMs: 30_000 }));
    la.release();
    // The release on a hands its slot to b's waiter; an arrival on a right behind it finds the budget full.
    const late = await a.admit();
    expect(late).toMatchObject({ admitted: false, reason: 'dam_full' });
    await waitFor('the waiter on b got the slot freed on a', () => first.outcome?.admitted === true);
    expect(await global(a)).toMatchObject({ used: 2, capacity: 2, length: 0 });
  });

  it('positions move up as the line moves, with an estimate from the measured turnover', async () => {
    const a = await dam('eta-a', { slotsPerInstance: 4 });
    const leases = (await Promise.all(Array.from({ length: 4 }, () => a.admit()))).map(lease);
    const waiting = await Promise.all(Array.from({ length: 12 }, () => a.admit(null, { waitMs: 60_000 }))).then((rs) => rs.map((r) => watch(a, r)));
    const last = waiting.find((w) => w.waiter.position === 12) as Watched;
    const told: Array<[number, number | null]> = [];
    last.waiter.onChange((p, eta) => told.push([p, eta]));
    expect(last.waiter.etaMs).toBeNull();
    // Turn over one slot every ~150 ms for a while: the line moves and the turnover becomes known.
    const held = [...leases];
    for (let i = 0; i < 8; i++) {
      held.shift()?.release();
      const admitted = waiting.filter((w) => w.outcome?.admitted);
      await waitFor('next admitted', () => waiting.filter((w) => w.outcome?.admitted).length === admitted.length + 1);
      const newest = waiting.filter((w) => w.outcome?.admitted && !admitted.includes(w));
      for (const w of newest) held.push((w.outcome as { lease: Lease }).lease);
      await new Promise((r) => setTimeout(r, 150));
    }
    await waitFor('position 4 with a measured estimate', () => last.waiter.position === 4 && last.waiter.etaMs !== null, 3_000);
    expect(told.length).toBeGreaterThan(0);
    const positions = told.map(([p]) => p);
    expect([...positions].sort((x, y) => y - x)).toEqual(positions);
    // About 4 slots ahead at about 6 a second.
    expect(last.waiter.etaMs).toBeGreaterThan(0);
    for (const l of held) l.release();
  });

  it("a crashed instance's waiters leave the line within its heartbeat TTL and the others move up", async () => {
    const a = await dam('crash-a', { slotsPerInstance: 2 });
    const b = await dam('crash-b', { slotsPerInstance: 2 });
    const sessions = (await Promise.all([a.admit(), a.admit(), b.admit(), b.admit()])).map(lease);
    const mixed = [];
    for (let i = 0; i < 10; i++) mixed.push(watch(i % 2 ? b : a, await (i % 2 ? b : a).admit(null, { waitMs: 60_000 })));
    expect((await global(a)).length).toBe(10);
    // b "dies": its heartbeat stops; its waiters' connections would have died with it.
    const timer = (b as unknown as { timer: NodeJS.Timeout }).timer;
    clearInterval(timer);
    await waitFor("b's waiters gone from the line", async () => (await global(a)).length === 5, 3_000);
    const onA = mixed.filter((w) => w.dam === a);
    await waitFor("a's waiters at positions 1..5", () => onA.map((w) => w.waiter.position).join() === '1,2,3,4,5', 2_000);
    // b's share left with it: the budget is a's two slots, and a's sessions hold them.
    expect(await global(a)).toEqual({ used: 2, capacity: 2, length: 5 });
    for (const l of sessions.slice(0, 2)) l.release();
    await waitFor("a's first two admitted", () => onA.filter((w) => w.outcome?.admitted).length === 2);
    expect(onA.slice(0, 2).every((w) => w.outcome?.admitted)).toBe(true);
    expect(await global(a)).toEqual({ used: 2, capacity: 2, length: 3 });
  });

  it('a waiter that leaves frees its place at once; a slot granted as it leaves passes on to the next', async () => {
    const a = await dam('leave-a', { slotsPerInstance: 1 });
    const b = await dam('leave-b', { slotsPerInstance: 1 });
    const sa = lease(await a.admit());
    lease(await b.admit());
    const w1 = watch(a, await a.admit(null, { waitMs: 30_000 }));
    const w2 = watch(b, await b.admit(null, { waitMs: 30_000 }));
    const w3 = watch(a, await a.admit(null, { waitMs: 30_000 }));
    w2.waiter.leave();
    await waitFor('w2 left', () => w2.outcome !== null);
    expect(w2.outcome).toMatchObject({ admitted: false, reason: 'left' });
    expect((await global(a)).length).toBe(2);
    // w1 leaves in the same turn as the slot that would be its own is released: it passes on to w3.
    sa.release();
    w1.waiter.leave();
    await waitFor('w3 admitted', () => w3.outcome?.admitted === true);
    expect(w1.outcome?.admitted).toBe(false);
    expect(await global(a)).toMatchObject({ used: 2, capacity: 2, length: 0 });
  });

  it('handoffs are exact: churn of sessions, waiters, leaves and deadlines on two instances never exceeds capacity, and every count returns to zero', async () => {
    const opts: Partial<DamOptions> = { slotsPerInstance: 20, instanceCeiling: 40, userMaxSessions: 3 };
    const a = await dam('churn-a', opts);
    const b = await dam('churn-b', opts);
    const leases: Lease[] = [];
    const waiters: Watched[] = [];
    let over = 0;
    let monitoring = true;
    const monitor = (async () => {
      while (monitoring) {
        const [used, cap] = await Promise.all([
          raw.hvals('td:dam:{dam}:held').then((v) => v.reduce((s, x) => s + Number(x), 0)),
          raw.zcard('td:dam:{dam}:instances').then((n) => n * 20),
        ]);
        if (used > cap) over++;
        await new Promise((r) => setTimeout(r, 5));
      }
    })();
    const end = Date.now() + 3_000;
    let i = 0;
    while (Date.now() < end) {
      const d = i++ % 2 ? a : b;
      const user = i % 5 === 0 ? `jwt:u${i % 7}` : null;
      const r = await d.admit(user, { waitMs: i % 9 === 0 ? 300 : 20_000 });
      if (r.admitted) leases.push(r.lease);
      else if (r.reason === 'queued') waiters.push(watch(d, r));
      for (const w of waiters) if (w.outcome?.admitted && !leases.includes(w.outcome.lease)) leases.push(w.outcome.lease);
      if (Math.random() < 0.45 && leases.length > 0) leases.splice(Math.floor(Math.random() * leases.length), 1)[0]?.release();
      if (Math.random() < 0.1) waiters.filter((w) => w.outcome === null)[0]?.waiter.leave();
    }
    for (const w of waiters) w.waiter.leave();
    await waitFor('every wait settled', () => waiters.every((w) => w.outcome !== null), 5_000);
    for (const w of waiters) if (w.outcome?.admitted && !leases.includes(w.outcome.lease)) leases.push(w.outcome.lease);
    const confirmations = leases.map((l) => {
      l.release();
      return l.confirmation;
    });
    await Promise.all(confirmations);
    monitoring = false;
    await monitor;
    expect(over).toBe(0);
    expect(waiters.length).toBeGreaterThan(20);
    expect(waiters.some((w) => w.outcome?.admitted)).toBe(true);
    expect(waiters.some((w) => !w.outcome?.admitted && (w.outcome as { reason: string }).reason === 'timeout')).toBe(true);
    await Promise.all([a.heartbeat(), b.heartbeat()]);
    expect(await global(a)).toMatchObject({ used: 0, capacity: 40, length: 0 });
    expect(a.heldCount + b.heldCount).toBe(0);
    expect(await raw.hgetall('td:dam:{dam}:users')).toEqual({});
    expect(Object.values(await raw.hgetall('td:dam:{dam}:grants')).every((v) => v === '0')).toBe(true);
    expect(await raw.hlen('td:dam:{dam}:iline:churn-a')).toBe(0);
    expect(await raw.hlen('td:dam:{dam}:iline:churn-b')).toBe(0);
  });

  it('bounded: beyond the most waiters, line_full; with a measured turnover, a wait too short for the place is refused with the estimate', async () => {
    const a = await dam('bound-a', { slotsPerInstance: 2, line: { maxWaiters: 5, maxWaitMs: 60_000, turnoverWindowMs: 2_000 } });
    const leases = (await Promise.all([a.admit(), a.admit()])).map(lease);
    const waiting: Watched[] = [];
    for (let i = 0; i < 5; i++) waiting.push(watch(a, await a.admit(null, { waitMs: 60_000 })));
    expect(await a.admit(null, { waitMs: 60_000 })).toMatchObject({ admitted: false, reason: 'line_full', retryAfterMs: null });
    // Turn over two slots a second for a while, so the line knows its pace.
    const held = [...leases];
    for (let i = 0; i < 4; i++) {
      held.shift()?.release();
      await waitFor('next', () => waiting[i]?.outcome?.admitted === true);
      held.push((waiting[i]?.outcome as { lease: Lease }).lease);
      await new Promise((r) => setTimeout(r, 300));
    }
    await waitFor('turnover known', async () => (await a.status()).line.turnoverPerSec !== null, 3_000);
    // One waiter left, so the next arrival is position 2; at ~3 slots/s it cannot be served within 100 ms.
    const short = await a.admit(null, { waitMs: 100 });
    expect(short).toMatchObject({ admitted: false, reason: 'wait_too_long' });
    expect((short as { retryAfterMs: number }).retryAfterMs).toBeGreaterThan(0);
    const long = await a.admit(null, { waitMs: 30_000 });
    expect(long).toMatchObject({ admitted: false, reason: 'queued' });
    for (const l of held) l.release();
  });

  it('a request that waits asks Redis even while the instance decides others on its local share (Redis was only slow)', async () => {
    const a = await dam('slow-a', { slotsPerInstance: 1, instanceCeiling: 2, redisTimeoutMs: 20 });
    lease(await a.admit());
    await redis.pause();
    let pending: Promise<AdmitResult>;
    try {
      const refused = await a.admit();
      expect(refused).toMatchObject({ admitted: false, reason: 'dam_full', fallback: true });
      expect(a.inFallback).toBe(true);
      // Sent while the instance decides on its local share; Redis answers once it is thawed (within the join's 1 s).
      pending = a.admit(null, { waitMs: 30_000 });
    } finally {
      await redis.resume();
    }
    expect(await pending).toMatchObject({ admitted: false, reason: 'queued' });
  });

  it('a wait ends at its deadline, out of the line', async () => {
    const a = await dam('deadline-a', { slotsPerInstance: 1 });
    lease(await a.admit());
    const w = watch(a, await a.admit(null, { waitMs: 400 }));
    await waitFor('timed out', () => w.outcome !== null, 3_000);
    expect(w.outcome).toMatchObject({ admitted: false, reason: 'timeout' });
    expect((await global(a)).length).toBe(0);
  });

  describe('tiers', () => {
    const tiers = [
      { name: 'pro', reservedShare: 0.2 },
      { name: 'free', reservedShare: 0 },
      { name: 'anonymous', reservedShare: 0 },
    ];

    it('with the budget full of free users, a pro user is admitted within its reserved share, and a free one waits', async () => {
      const a = await dam('tier-a', { slotsPerInstance: 10, instanceCeiling: 20, tiers });
      const free = await Promise.all(Array.from({ length: 12 }, () => a.admit(null, { tier: 'free' })));
      expect(free.filter((r) => r.admitted)).toHaveLength(8);
      expect(free.filter((r) => !r.admitted && r.reason === 'dam_full')).toHaveLength(4);
      const freeWaiter = watch(a, await a.admit(null, { tier: 'free', waitMs: 30_000 }));
      expect((await a.admit(null, { tier: 'pro' })).admitted).toBe(true);
      expect((await a.admit(null, { tier: 'pro' })).admitted).toBe(true);
      // The reserved share is used; the rest is shared, and it is full.
      expect(await a.admit(null, { tier: 'pro' })).toMatchObject({ admitted: false, reason: 'dam_full' });
      const status = await a.status();
      expect(status.tiers).toEqual([
        { name: 'pro', reservedShare: 0.2, sessions: 2 },
        { name: 'free', reservedShare: 0, sessions: 8 },
        { name: 'anonymous', reservedShare: 0, sessions: 0 },
      ]);
      // A free session ends: its slot goes to the free waiter.
      (free.find((r) => r.admitted) as { lease: Lease }).lease.release();
      await waitFor('free waiter admitted', () => freeWaiter.outcome?.admitted === true);
    });

    it('a free session ending does not hand a pro-reserved slot to a free waiter; a pro waiter goes ahead of free ones', async () => {
      const a = await dam('tier-b', { slotsPerInstance: 10, tiers });
      const free = (await Promise.all(Array.from({ length: 8 }, () => a.admit(null, { tier: 'free' })))).map(lease);
      const pro = (await Promise.all(Array.from({ length: 2 }, () => a.admit(null, { tier: 'pro' })))).map(lease);
      const f1 = watch(a, await a.admit(null, { tier: 'free', waitMs: 30_000 }));
      const f2 = watch(a, await a.admit(null, { tier: 'free', waitMs: 30_000 }));
      const p1 = watch(a, await a.admit(null, { tier: 'pro', waitMs: 30_000 }));
      expect([f1.waiter.position, f2.waiter.position, p1.waiter.position]).toEqual([1, 2, 1]);
      // A pro session ends: the slot is in the pro reserve; the pro waiter takes it.
      pro[0]?.release();
      await waitFor('pro waiter admitted', () => p1.outcome?.admitted === true);
      expect(f1.outcome).toBeNull();
      // Another pro session ends: the free waiters may not take the reserved slot.
      pro[1]?.release();
      await waitFor('counted', async () => (await a.status()).tiers[0]?.sessions === 1);
      await a.heartbeat();
      expect(f1.outcome).toBeNull();
      // A free one ends: f1 gets it.
      free[0]?.release();
      await waitFor('f1 admitted', () => f1.outcome?.admitted === true);
      expect(f2.outcome).toBeNull();
    });

    it('without Redis the local share keeps the same reserve: free sessions take 8 of 10, pro the last 2', async () => {
      const a = await dam('tier-fb', { slotsPerInstance: 10, tiers, redisTimeoutMs: 20 });
      await redis.pause();
      try {
        const free = [];
        for (let i = 0; i < 10; i++) free.push(await a.admit(null, { tier: 'free' }));
        expect(a.inFallback).toBe(true);
        expect(free.filter((r) => r.admitted)).toHaveLength(8);
        const pro = [];
        for (let i = 0; i < 3; i++) pro.push(await a.admit(null, { tier: 'pro' }));
        expect(pro.map((r) => r.admitted)).toEqual([true, true, false]);
      } finally {
        await redis.resume();
      }
      await waitFor('back from the fallback, counts reconciled', async () => !a.inFallback && (await a.status()).tiers[1]?.sessions === 8, 3_000);
    });

    it('a full line sheds its last lower-tier waiter for a higher-tier arrival; anonymous is the lowest', async () => {
      const a = await dam('tier-c', { slotsPerInstance: 1, tiers, line: { maxWaiters: 3, maxWaitMs: 60_000, turnoverWindowMs: 2_000 } });
      lease(await a.admit(null, { tier: 'free' }));
      const w = [
        watch(a, await a.admit(null, { tier: 'free', waitMs: 30_000 })),
        watch(a, await a.admit(null, { waitMs: 30_000 })),
        watch(a, await a.admit(null, { tier: 'free', waitMs: 30_000 })),
      ];
      // Anonymous (no tier) is last: the second free arrival went ahead of it.
      expect(w.map((x) => x.waiter.position)).toEqual([1, 2, 2]);
      // Full: a free arrival sheds the anonymous waiter; an anonymous one finds nobody lower.
      const f3 = watch(a, await a.admit(null, { tier: 'free', waitMs: 30_000 }));
      expect(f3.waiter.position).toBe(3);
      await waitFor('anonymous waiter shed', () => w[1]?.outcome !== null);
      expect(w[1]?.outcome).toMatchObject({ admitted: false, reason: 'shed' });
      expect(await a.admit(null, { waitMs: 30_000 })).toMatchObject({ admitted: false, reason: 'line_full' });
      // A pro arrival sheds the last free waiter and goes first.
      const pro = watch(a, await a.admit(null, { tier: 'pro', waitMs: 30_000 }));
      expect(pro.waiter.position).toBe(1);
      await waitFor('last free waiter shed', () => f3.outcome !== null);
      expect(f3.outcome).toMatchObject({ admitted: false, reason: 'shed' });
      expect(w[0]?.outcome).toBeNull();
      expect((await global(a)).length).toBe(3);
    });
  });
});
