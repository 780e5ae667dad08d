import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { SseClient, TcpProxy, ask, startTestRedis, waitFor, type ChatSession, type RedisHandle } from '@traffic-dam/stack';
import { startInstance, type TestInstance } from '../testing/instance';
import { WorkerDouble } from '../testing/worker-double';

const held = async (url: string): Promise<number> => ((await (await fetch(`${url}/dam`)).json()) as { held: number }).held;

describe('closing a session while Redis is away (real Redis)', () => {
  let redis: RedisHandle;
  let proxy: TcpProxy;
  let worker: WorkerDouble;
  let a: TestInstance;
  let b: TestInstance;
  let probe: Redis;

  beforeAll(async () => {
    redis = await startTestRedis(mkdtempSync(join(tmpdir(), 'td-cleanup-')));
    const u = new URL(redis.url);
    proxy = await TcpProxy.start(u.hostname, Number(u.port));
    worker = new WorkerDouble(redis.url);
    await worker.start();
    // A reaches Redis only through the proxy; B directly. A's dropped streams end after a short resume window.
    [a, b] = await Promise.all([startInstance(proxy.url(redis.url), 'cleanup-a', { SSE_RESUME_MS: '200' }), startInstance(redis.url, 'cleanup-b')]);
    probe = new Redis(redis.url);
  });

  afterAll(async () => {
    await worker?.stop();
    await Promise.all([a?.app.close(), b?.app.close()]);
    probe?.disconnect();
    await proxy?.stop();
    await redis?.stop();
  });

  it('is finished once Redis is back: every record and in-flight claim gone, every question in flight cancelled', async () => {
    const streams = await Promise.all(Array.from({ length: 10 }, () => new SseClient(`${a.url}/chat/stream`).open()));
    const sessions: ChatSession[] = await Promise.all(streams.map((s) => s.session()));
    // Three questions in flight, accepted by B and never answered while the test looks.
    const asked: string[] = [];
    for (const s of sessions.slice(0, 3)) {
      worker.holdNext = true;
      const r = await ask(b.url, s, 'hold on');
      expect(r.status).toBe(202);
      const id = (r.body as { messageId: string }).messageId;
      asked.push(id);
      await waitFor('the worker got the question', async () => worker.received.some((q) => q['id'] === id));
    }
    proxy.cut();
    try {
      for (const s of streams) s.close();
      await waitFor('the slot released', async () => (await held(a.url)) === 0);
      // The outage itself lasts a while (the fault, not a wait for a condition): the first attempts fail.
      await sleep(1_500);
    } finally {
      proxy.resume();
    }
    await waitFor('every record and claim gone', async () => {
      const keys = await probe.keys('td:session:*');
      const cancelled = await Promise.all(asked.map((id) => probe.exists(`td:cancel:${id}`)));
      return keys.length === 0 && cancelled.every((n) => n === 1);
    }, 5_000);
    worker.release();
  });
});
