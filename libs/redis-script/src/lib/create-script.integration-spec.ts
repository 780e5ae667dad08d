import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { startTestRedis, type RedisHandle } from '@traffic-dam/stack';
import { createScript } from './create-script';

const incrBy = createScript<[counter: string], [by: number], number>(`return redis.call('INCRBY', KEYS[1], ARGV[1])`);

describe('createScript (real Redis)', () => {
  let redis: RedisHandle;
  let client: Redis;

  beforeAll(async () => {
    redis = await startTestRedis(mkdtempSync(join(tmpdir(), 'td-script-')));
    client = new Redis(redis.url);
  });

  afterAll(async () => {
    client?.disconnect();
    await redis?.stop();
  });

  it('runs a script Redis has not seen (EVAL once), then by its sha, exactly once per call', async () => {
    await client.script('FLUSH');
    expect(await incrBy(client, ['n'], [2])).toBe(2);
    expect(await client.script('EXISTS', incrBy.sha)).toEqual([1]);
    expect(await incrBy(client, ['n'], [3])).toBe(5);
  });

  it('is never overtaken by a command sent behind its first call', async () => {
    await client.script('FLUSH');
    const fresh = new Redis(redis.url);
    try {
      const set = createScript<[key: string], [value: string], 'OK'>(`return redis.call('SET', KEYS[1], ARGV[1])`);
      // Not awaited in between: with EVALSHA, NOSCRIPT and EVAL again, the GET would run first.
      const [, got] = await Promise.all([set(fresh, ['order'], ['first']), fresh.get('order')]);
      expect(got).toBe('first');
    } finally {
      fresh.disconnect();
    }
  });

  it('queues on a pipeline with the replies in order', async () => {
    const p = client.pipeline();
    incrBy.queue(p, ['m'], [1]);
    incrBy.queue(p, ['m'], [10]);
    expect(await p.exec()).toEqual([
      [null, 1],
      [null, 11],
    ]);
  });

  it('passes a script error through', async () => {
    const bad = createScript<[], [], never>(`return redis.call('NOPE')`);
    await expect(bad(client, [], [])).rejects.toThrow(/Unknown Redis command|unknown command/i);
  });
});
