import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Cluster, Redis } from 'ioredis';
import { startLocalRedisCluster, type RedisClusterHandle } from './redis-cluster';

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe('startLocalRedisCluster (real redis-server processes)', () => {
  let handle: RedisClusterHandle;
  let cluster: Cluster;
  const pids: number[] = [];

  beforeAll(async () => {
    handle = await startLocalRedisCluster({ dir: mkdtempSync(join(tmpdir(), 'td-cluster-')) });
    cluster = new Cluster(handle.nodes, { redisOptions: { connectTimeout: 2_000 } });
    cluster.on('error', () => undefined);
    // Each node's pid, to prove stop() ends them.
    for (const node of handle.nodes) {
      const direct = new Redis({ host: node.host, port: node.port });
      try {
        const info = await direct.info('server');
        pids.push(Number(/^process_id:(\d+)/m.exec(info)?.[1]));
      } finally {
        direct.disconnect();
      }
    }
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

  it('stop() ends every redis-server it started', async () => {
    expect(pids).toHaveLength(3);
    for (const pid of pids) expect(isAlive(pid)).toBe(true);
    cluster.disconnect();
    await handle.stop();
    for (const pid of pids) expect(isAlive(pid)).toBe(false);
    await expect(handle.stop()).resolves.toBeUndefined();
  });

  it('refuses fewer than 3 masters before starting anything', async () => {
    await expect(startLocalRedisCluster({ dir: mkdtempSync(join(tmpdir(), 'td-cluster-')), masters: 2 })).rejects.toThrow(
      /masters must be/,
    );
  });
});
