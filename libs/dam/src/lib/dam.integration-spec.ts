import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { startTestRedis, waitFor, type RedisHandle } from '@traffic-dam/stack';
import { AdaptiveDeadline, Dam, type Lease } from '../index';
import type { DamOptions } from './options';

function admissionClient(url: string): Redis {
  const r = new Redis(url, { enableOfflineQueue: false, autoResendUnfulfilledCommands: false, maxRetriesPerRequest: 0 });
  r.on('error', () => undefined);
  return r;
}

describe('Dam budget against real Redis', () => {
  let redis: RedisHandle;
  const clients: Redis[] = [];
  const dams: Dam[] = [];

  async function dam(id: string, o: Partial<DamOptions> = {}): Promise<Dam> {
    const client = admissionClient(redis.url);
    clients.push(client);
    await new Promise<void>((resolve) => client.once('ready', () => resolve()));
    // Deadlines and TTLs a loaded machine keeps: a test about the fallback or a dead instance sets its own.
    const d = new Dam({ redis: client, instanceId: id, heartbeatMs: 200, heartbeatTtlMs: 2_000, redisTimeoutMs: 2_000, ...o });
    dams.push(d);
    await d.start();
    return d;
  }

  beforeAll(async () => {
    redis = await startTestRedis(mkdtempSync(join(tmpdir(), 'td-dam-')));
  });

  afterEach(async () => {
    await Promise.all(dams.splice(0).map((d) => d.stop()));
    for (const c of clients.splice(0)) c.disconnect();
    const flush = new Redis(redis.url);
    await flush.flushall();
    flush.disconnect();
  });

  afterAll(async () => {
    await redis.stop();
  });

  it('race: 2,500 concurrent admits over 2 instances against capacity 2,000 admit exactly 2,000, 100 times', async () => {
    // Ceiling above the share, so the global budget (one script per admit) is what bounds them.
    // Production heartbeat timing: a 2,500-admit burst must not make an instance look dead.
    const events: string[] = [];
    const opts: Partial<DamOptions> = {
      slotsPerInstance: 1_000,
      instanceCeiling: 2_500,
      redisTimeoutMs: 5_000,
      heartbeatMs: 1_000,
      heartbeatTtlMs: 3_000,
      onEvent: (e) => events.push(e.type),
    };
    const [a, b] = await Promise.all([dam('race-a', opts), dam('race-b', opts)]);
    for (let round = 0; round < 100; round++) {
      const results = await Promise.all(Array.from({ length: 2_500 }, () => (Math.random() < 0.5 ? a : b).admit()));
      const leases = results.flatMap((r) => (r.admitted ? [r.lease] : []));
      expect({ round, admitted: leases.length }).toEqual({ round, admitted: 2_000 });
      expect(results.filter((r) => !r.admitted).every((r) => !r.admitted && r.reason === 'dam_full')).toBe(true);
      expect(a.inFallback || b.inFallback).toBe(false);
      expect(events.filter((e) => e !== 'registered')).toEqual([]);
      const s = await a.status();
      expect(s.global?.used).toBe(2_000);
      expect(s.global?.capacity).toBe(2_000);
      for (const l of leases) l.release();
      await waitFor('budget empty', async () => (await a.status()).global?.used === 0);
    }
  }, 300_000);

  it('releases exactly once, and counts never go negative', async () => {
    const a = await dam('once-a');
    const r = await a.admit();
    if (!r.admitted) throw new Error('refused');
    r.lease.release();
    r.lease.release();
    await waitFor('budget empty', async () => (await a.status()).global?.used === 0);
    expect(a.heldCount).toBe(0);
    const raw = new Redis(redis.url);
    expect(await raw.hget('td:dam:{dam}:held', 'once-a')).toBe('0');
    raw.disconnect();
  });

  it('the per-instance ceiling is local and exact', async () => {
    const a = await dam('ceil-a', { slotsPerInstance: 1_000, instanceCeiling: 10 });
    const results = await Promise.all(Array.from({ length: 25 }, () => a.admit()));
    expect(results.filter((r) => r.admitted)).toHaveLength(10);
    expect(results.filter((r) => !r.admitted && r.reason === 'instance_full')).toHaveLength(15);
  });

  it('caps concurrent sessions per user across instances', async () => {
    const [a, b] = await Promise.all([dam('user-a', { userMaxSessions: 3 }), dam('user-b', { userMaxSessions: 3 })]);
    const got = await Promise.all(Array.from({ length: 8 }, (_, i) => (i % 2 ? a : b).admit('jwt:alice')));
    const leases = got.flatMap((r) => (r.admitted ? [r.lease] : []));
    expect(leases).toHaveLength(3);
    expect(got.filter((r) => !r.admitted && r.reason === 'user_sessions')).toHaveLength(5);
    // Another user is not affected.
    expect((await a.admit('jwt:bob')).admitted).toBe(true);
    leases[0]?.release();
    await waitFor('alice admitted on b', async () => (await b.admit('jwt:alice')).admitted);
  });

  it('a dead instance (no heartbeat) gives its slots back and capacity shrinks', async () => {
    const a = await dam('dead-a', { slotsPerInstance: 5 });
    const b = await dam('dead-b', { slotsPerInstance: 5 });
    const held: Lease[] = [];
    for (let i = 0; i < 5; i++) {
      const r = await b.admit();
      if (r.admitted) held.push(r.lease);
    }
    expect((await a.status()).global).toMatchObject({ used: 5, capacity: 10, live: 2 });
    // b "dies": its timer stops and it never releases.
    (b as unknown as { timer: NodeJS.Timeout }).timer.unref();
    clearInterval((b as unknown as { timer: NodeJS.Timeout }).timer);
    await waitFor('dead instance reaped', async () => {
      const g = (await a.status()).global;
      return g?.capacity === 5 && g.used === 0;
    });
  });

  it('falls back to its local share without Redis and reconciles within one heartbeat', async () => {
    const a = await dam('fb-a', { slotsPerInstance: 4, redisTimeoutMs: 20 });
    const first = await a.admit();
    expect(first.admitted && !first.fallback).toBe(true);
    await redis.pause();
    try {
      const results = [];
      for (let i = 0; i < 6; i++) results.push(await a.admit());
      expect(a.inFallback).toBe(true);
      // Local share of 4, one already held: exactly 3 more.
      expect(results.filter((r) => r.admitted)).toHaveLength(3);
      expect(results.filter((r) => r.admitted).every((r) => r.admitted && r.fallback)).toBe(true);
    } finally {
      await redis.resume();
    }
    await waitFor('out of fallback', async () => !a.inFallback);
    expect((await a.status()).global).toMatchObject({ used: 4, capacity: 4 });
  });

  it('an admit that times out takes the last slot of the local share (it does not count itself as in flight)', async () => {
    const a = await dam('fb-last', { slotsPerInstance: 2, redisTimeoutMs: 20 });
    expect((await a.admit()).admitted).toBe(true);
    await redis.pause();
    try {
      // One slot of the local share is free: the admit that times out is the one that takes it.
      const last = await a.admit();
      expect(last).toMatchObject({ admitted: true, fallback: true });
      expect((await a.admit()).admitted).toBe(false);
    } finally {
      await redis.resume();
    }
    await waitFor('out of fallback', async () => !a.inFallback);
    expect((await a.status()).global).toMatchObject({ used: 2, capacity: 2 });
  });

  it('the admission deadline is learnt from what Redis takes: a Redis slower than the floor, as a loaded machine taught it, keeps the dam on Redis', async () => {
    const slowRedis = async (d: Dam): Promise<Awaited<ReturnType<Dam['admit']>>> => {
      // Redis holds every other client's commands for 300 ms from when it took the pause, which
      // is before it answered it: the admit sent after that answer waits for the rest.
      const pauser = new Redis(redis.url);
      try {
        await pauser.call('CLIENT', 'PAUSE', '300', 'ALL');
        return await d.admit();
      } finally {
        pauser.disconnect();
      }
    };
    // Fresh, at its 20 ms floor: the wait is too long, it decides on its local share.
    const fresh = await dam('learnt-fresh', { redisTimeoutMs: 20 });
    expect((await slowRedis(fresh)).fallback).toBe(true);
    // Round trips of ~900 ms seen on this connection (the machine was loaded) raised the deadline
    // to its 1 s cap: the same wait is a slow reply, not an outage.
    const taught = new AdaptiveDeadline(20, 1_000);
    for (let i = 0; i < 10; i++) taught.observe(900);
    expect(taught.currentMs).toBeGreaterThanOrEqual(900);
    const learnt = await dam('learnt-slow', { redisTimeoutMs: 20, redisDeadline: taught });
    expect(await slowRedis(learnt)).toMatchObject({ admitted: true, fallback: false });
    expect(learnt.inFallback).toBe(false);
    // And it is measured: fast replies bring it back down toward the floor.
    for (let i = 0; i < 60; i++) if (!(await learnt.admit()).admitted) break;
    expect(taught.currentMs).toBeLessThan(900);
  });

  it('concurrent admits and releases share script calls (one per event-loop turn), in order, and the count stays exact across heartbeats', async () => {
    // What is counted here is script calls and exact counts, not deadlines: a generous admission
    // deadline, so a loaded machine does not send an admit into the fallback.
    const a = await dam('batch-a', {
      slotsPerInstance: 300,
      instanceCeiling: 1_000,
      userMaxSessions: 2,
      heartbeatMs: 50,
      heartbeatTtlMs: 1_000,
      redisTimeoutMs: 5_000,
    });
    const raw = new Redis(redis.url);
    const calls = async (): Promise<number> => {
      const info = await raw.info('commandstats');
      return Number(/cmdstat_evalsha:calls=(\d+)/.exec(info)?.[1] ?? 0) + Number(/cmdstat_eval:calls=(\d+)/.exec(info)?.[1] ?? 0);
    };
    const before = await calls();
    // 400 at once: 300 slots; one user asks 5 times and gets its 2.
    const results = await Promise.all(Array.from({ length: 400 }, (_, i) => a.admit(i < 5 ? 'jwt:carol' : null)));
    const used = await calls();
    expect(results.filter((r) => r.admitted)).toHaveLength(300);
    expect(results.slice(0, 5).filter((r) => r.admitted)).toHaveLength(2);
    expect(results.filter((r) => !r.admitted && r.reason === 'user_sessions')).toHaveLength(3);
    // Far fewer script calls than admits (heartbeats every 50 ms add a few).
    expect(used - before).toBeLessThan(100);
    const leases = results.flatMap((r) => (r.admitted ? [r.lease] : []));
    // Churn for a second with heartbeats in between: release and re-admit at random.
    const end = Date.now() + 1_000;
    while (Date.now() < end) {
      const k = Math.floor(Math.random() * leases.length);
      const [l] = leases.splice(k, 1);
      l?.release();
      const again = await Promise.all([a.admit(), a.admit()]);
      for (const r of again) if (r.admitted) leases.push(r.lease);
    }
    await Promise.all(leases.map((l) => l.confirmation));
    const confirmed = await Promise.all(leases.map(async (l) => { l.release(); return l.confirmation; }));
    expect(confirmed.every((c) => c === 'ok')).toBe(true);
    await a.heartbeat();
    expect((await a.status()).global).toMatchObject({ used: 0, capacity: 300 });
    expect(a.heldCount).toBe(0);
    expect(await raw.hgetall('td:dam:{dam}:users')).toEqual({});
    raw.disconnect();
  });

  it('a release Redis applies late is confirmed ok: its outcome is what Redis did, not whether it answered in time', async () => {
    const a = await dam('late-release', { slotsPerInstance: 3, redisTimeoutMs: 20 });
    const r = await a.admit();
    if (!r.admitted) throw new Error('refused');
    const admin = new Redis(redis.url);
    try {
      // Scripts wait 300 ms, 60 times the admission deadline: the release runs, late.
      await admin.call('CLIENT', 'PAUSE', '300', 'WRITE');
      r.lease.release();
      expect(await waitFor('release confirmed', r.lease.confirmation ?? Promise.reject(new Error('not sent to Redis')))).toBe('ok');
      expect(await admin.hget('td:dam:{dam}:held', 'late-release')).toBe('0');
    } finally {
      admin.disconnect();
    }
  });
});
