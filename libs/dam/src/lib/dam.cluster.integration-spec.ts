import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Cluster } from 'ioredis';
import { startTestRedisCluster, waitFor, type RedisClusterHandle } from '@traffic-dam/stack';
import { Dam } from '../index';

describe('Dam on a real 3-node Redis Cluster', () => {
  let handle: RedisClusterHandle;
  const clients: Cluster[] = [];
  const dams: Dam[] = [];

  async function dam(id: string, slots: number, userMaxSessions = 0): Promise<Dam> {
    const c = new Cluster(handle.nodes, {
      enableOfflineQueue: false,
      redisOptions: { autoResendUnfulfilledCommands: false, maxRetriesPerRequest: 0 },
    });
    c.on('error', () => undefined);
    clients.push(c);
    // Ceiling above the share: the global budget in the cluster is what bounds admission here.
    const d = new Dam({ redis: c, instanceId: id, slotsPerInstance: slots, instanceCeiling: slots * 2, userMaxSessions, heartbeatMs: 200, heartbeatTtlMs: 600, redisTimeoutMs: 500 });
    dams.push(d);
    await d.start();
    return d;
  }

  beforeAll(async () => {
    handle = await startTestRedisCluster({ dir: mkdtempSync(join(tmpdir(), 'td-dam-cluster-')) });
  });

  afterAll(async () => {
    await Promise.all(dams.map((d) => d.stop()));
    for (const c of clients) c.disconnect();
    await handle?.stop();
  });

  it('admits exactly the pooled capacity, caps users, reaps a dead instance, all in one slot', async () => {
    const a = await dam('cl-a', 50, 2);
    const b = await dam('cl-b', 50, 2);
    expect(a.inFallback || b.inFallback).toBe(false);
    const tries = Array.from({ length: 130 }, (_, i) => ({ on: i % 2 ? 'a' : 'b', user: i < 6 ? 'jwt:u1' : null }));
    const results = await Promise.all(tries.map((t) => (t.on === 'a' ? a : b).admit(t.user)));
    const admitted = tries.flatMap((t, i) => {
      const r = results[i];
      return r?.admitted ? [{ ...t, lease: r.lease }] : [];
    });
    // 100 slots in all; user u1 got 2 of its 6 tries.
    expect(admitted).toHaveLength(100);
    expect(admitted.filter((x) => x.user === 'jwt:u1')).toHaveLength(2);
    expect(results.filter((r) => !r.admitted && r.reason === 'user_sessions')).toHaveLength(4);
    expect((await a.status()).global).toMatchObject({ used: 100, capacity: 100, live: 2, stale: false });

    // b dies without a word: its slots and its user counts come back on a's heartbeat (the reap
    // reads b's per-instance user hash, a key in the same slot).
    clearInterval((b as unknown as { timer: NodeJS.Timeout }).timer);
    const aHeld = admitted.filter((x) => x.on === 'a').length;
    await waitFor('capacity of one instance', async () => (await a.status()).global?.capacity === 50);
    expect((await a.status()).global).toMatchObject({ used: aHeld, live: 1 });
    const u1OnA = admitted.filter((x) => x.on === 'a' && x.user === 'jwt:u1').length;
    const raw = clients[0] as Cluster;
    // The reap itself runs in a's next heartbeat (the status view already excluded b).
    await waitFor('dead instance reaped', async () => (await raw.zcard('td:dam:{dam}:instances')) === 1);
    expect(Number((await raw.hget('td:dam:{dam}:users', 'jwt:u1')) ?? 0)).toBe(u1OnA);
    expect(await raw.exists('td:dam:{dam}:iusers:cl-b')).toBe(0);
    // What is left of one instance's budget, and not one more.
    const extra = await Promise.all(Array.from({ length: 60 }, () => a.admit()));
    expect(extra.filter((r) => r.admitted)).toHaveLength(Math.max(0, 50 - aHeld));
  });
});
