import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Cluster, Redis } from 'ioredis';
import { pingRedis } from './redis';
import { startLocalRedisCluster, startTestRedisCluster, type RedisClusterHandle } from './redis-cluster';

describe('startTestRedisCluster (real Redis nodes: containers, or redis-server processes)', () => {
  let handle: RedisClusterHandle;
  let cluster: Cluster;

  beforeAll(async () => {
    handle = await startTestRedisCluster({ dir: mkdtempSync(join(tmpdir(), 'td-cluster-')) });
    cluster = new Cluster(handle.nodes, { redisOptions: { connectTimeout: 2_000 } });
    cluster.on('error', () => undefined);
  });

  afterAll(async () => {
    cluster?.disconnect();
    await handle?.stop();
  });

  it('has 3 masters and spreads hash tags over all of them', async () => {
    await cluster.set('warmup', '1');
    expect(handle.nodes).toHaveLength(3);
    expect(cluster.nodes('master').length).toBe(3);

    // One tag per master: CLUSTER KEYSLOT says the slot, cluster.slots says which master owns it.
    const byOwner = new Map<string, string>();
    for (let i = 0; i < 200 && byOwner.size < 3; i++) {
      const key = `{tag${i}}:k`;
      const slot = await cluster.cluster('KEYSLOT', key);
      const owner = cluster.slots[slot]?.[0];
      expect(owner).toBeDefined();
      if (owner && !byOwner.has(owner)) byOwner.set(owner, key);
    }
    expect(byOwner.size).toBe(3);

    for (const [owner, key] of byOwner) {
      await cluster.set(key, `v-${owner}`);
      expect(await cluster.get(key)).toBe(`v-${owner}`);
      // The key lives on that node: a plain connection to it reads it without a MOVED redirect.
      const [host, port] = owner.split(':');
      const direct = new Redis({ host, port: Number(port) });
      try {
        expect(await direct.get(key)).toBe(`v-${owner}`);
      } finally {
        direct.disconnect();
      }
    }
  });

  it('runs a Lua script over keys with the same hash tag', async () => {
    const script = `
      redis.call('SET', KEYS[1], ARGV[1])
      redis.call('SET', KEYS[2], ARGV[2])
      return redis.call('MGET', KEYS[1], KEYS[2])`;
    const result = await cluster.eval(script, 2, '{t}:a', '{t}:b', 'one', 'two');
    expect(result).toEqual(['one', 'two']);
  });

  it('refuses a Lua script over keys of different slots with CROSSSLOT', async () => {
    const [a, b] = ['{x}:a', '{y}:b'];
    expect(await cluster.cluster('KEYSLOT', a)).not.toBe(await cluster.cluster('KEYSLOT', b));
    await expect(cluster.eval("return redis.call('GET', KEYS[1])", 2, a, b)).rejects.toThrow(/CROSSSLOT/);
  });

  it('stop() ends every node it started', async () => {
    const url = (n: { host: string; port: number }): string => `redis://${n.host}:${n.port}`;
    expect(await Promise.all(handle.nodes.map((n) => pingRedis(url(n))))).toEqual([true, true, true]);
    cluster.disconnect();
    await handle.stop();
    expect(await Promise.all(handle.nodes.map((n) => pingRedis(url(n)).catch(() => false)))).toEqual([false, false, false]);
    await expect(handle.stop()).resolves.toBeUndefined();
  });

  it.each([
    ['startLocalRedisCluster', startLocalRedisCluster],
    ['startTestRedisCluster', startTestRedisCluster],
  ])('%s refuses fewer than 3 masters before starting anything', async (_, start) => {
    await expect(start({ dir: mkdtempSync(join(tmpdir(), 'td-cluster-')), masters: 2 })).rejects.toThrow(/masters must be/);
  });
});
