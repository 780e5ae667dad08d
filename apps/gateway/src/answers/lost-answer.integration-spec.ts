import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SseClient, ask, startTestRedis, type RedisHandle } from '@traffic-dam/stack';
import { startInstance, type TestInstance } from '../testing/instance';
import { WorkerDouble } from '../testing/worker-double';

describe('an answer that never comes (real Redis)', () => {
  let redis: RedisHandle;
  let worker: WorkerDouble;
  let a: TestInstance;
  let b: TestInstance;

  beforeAll(async () => {
    redis = await startTestRedis(mkdtempSync(join(tmpdir(), 'td-lost-')));
    worker = new WorkerDouble(redis.url);
    await worker.start();
    const env = { QUESTION_DEADLINE_MS: '600' };
    [a, b] = await Promise.all([startInstance(redis.url, 'lost-a', env), startInstance(redis.url, 'lost-b', env)]);
  });

  afterAll(async () => {
    await worker.stop();
    await Promise.all([a.app.close(), b.app.close()]);
    await redis.stop();
  });

  it('ends with error deadline_exceeded on the stream, even when the POST went to another instance', async () => {
    const sse = await new SseClient(`${a.url}/chat/stream`).open();
    try {
      const s = await sse.session();
      worker.holdNext = true; // the "worker" takes the question and never answers
      const posted = Date.now();
      const r = await ask(b.url, s, 'hello?');
      expect(r.status).toBe(202);
      const { messageId } = r.body as { messageId: string };
      const e = await sse.waitFor((x) => x.event === 'failed');
      expect(e.data).toEqual({ messageId, code: 'deadline_exceeded', message: 'No answer arrived before the deadline.' });
      // Not before the deadline (how soon after it is a figure for a benchmark, not a test).
      expect(Date.now() - posted).toBeGreaterThanOrEqual(600);
      // The session is usable again at once: the in-flight slot was released.
      expect((await ask(a.url, s, 'again?')).status).toBe(202);
      const metrics = await (await fetch(`${a.url}/metrics`)).text();
      expect(metrics).toMatch(/td_answers_lost_total\{[^}]*\} 1/);
    } finally {
      worker.release();
      sse.close();
    }
  });
});
