import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { SseClient, ask, startTestRedis, waitFor, type RedisHandle } from '@traffic-dam/stack';
import { startInstance, type TestInstance } from '../testing/instance';
import { WorkerDouble } from '../testing/worker-double';

describe('a question whose claim times out (real Redis)', () => {
  let redis: RedisHandle;
  let worker: WorkerDouble;
  let gw: TestInstance;

  beforeAll(async () => {
    redis = await startTestRedis(mkdtempSync(join(tmpdir(), 'td-claim-')));
    worker = new WorkerDouble(redis.url);
    await worker.start();
    gw = await startInstance(redis.url, 'claim-a', { REDIS_REQUEST_TIMEOUT_MS: '30' });
  });

  afterAll(async () => {
    await worker.stop();
    await gw.app.close();
    await redis.stop();
  });

  it('gets 503 redis_unavailable and does not leave the session busy once Redis catches up', async () => {
    const sse = await new SseClient(`${gw.url}/chat/stream`).open();
    const admin = new Redis(redis.url);
    try {
      const s = await sse.session();
      // Writes (the claim script) wait 300 ms: the claim runs, but after the gateway gave up on it.
      await admin.call('CLIENT', 'PAUSE', '300', 'WRITE');
      const r = await ask(gw.url, s, 'will this be stuck?');
      expect(r.status).toBe(503);
      expect((r.body as { code: string }).code).toBe('redis_unavailable');
      // A write of ours returns once the pause is over; the claim and its release were paused
      // before it. Then the clean-up has run when the claim's key is gone.
      await admin.set('td:test:pause-over', '1');
      await waitFor('the timed-out claim released', async () => (await admin.exists(`td:session:{${s.sessionId}}:inflight`)) === 0);
      // Without the clean-up this would be 409 question_in_flight for the claim's TTL (deadline + 5 s).
      const again = await ask(gw.url, s, 'and now?');
      expect(again.status).toBe(202);
      const { messageId } = again.body as { messageId: string };
      const end = await sse.waitFor((e) => (e.event === 'done' || e.event === 'failed') && (e.data as { messageId: string }).messageId === messageId, 5_000);
      expect(end.event).toBe('done');
    } finally {
      admin.disconnect();
      sse.close();
    }
  });
});
