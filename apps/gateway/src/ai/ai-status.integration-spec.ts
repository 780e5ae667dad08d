import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { SseClient, ask, startTestRedis, type RedisHandle, waitFor } from '@traffic-dam/stack';
import { startInstance, type TestInstance } from '../testing/instance';
import type { AiStatusView } from './ai-status';

describe('/dam shows the AI path: the wait a question would face, its limit, the workers, the rate, the breaker (real Redis)', () => {
  let redis: RedisHandle;
  let g: TestInstance;
  const streams: SseClient[] = [];

  beforeAll(async () => {
    redis = await startTestRedis(mkdtempSync(join(tmpdir(), 'td-ai-status-')));
    // One worker that declares 2 answers/s and never reads the queue: every question stays in line.
    const probe = new Redis(redis.url);
    await probe.xgroup('CREATE', 'td:questions', 'workers', '$', 'MKSTREAM');
    await probe.set('td:workers:w', JSON.stringify({ workerId: 'w', capacityPerSec: 2, throughputPerSec: 0, inFlight: 0, answering: 0, ts: Date.now() }), 'PX', 600_000);
    probe.disconnect();
    g = await startInstance(redis.url, 'ai-status', { DAM_MAX_QUEUE_WAIT_MS: '2000' });
  });

  afterAll(async () => {
    for (const s of streams) s.close();
    await g?.app.close();
    await redis?.stop();
  });

  const ai = async (): Promise<AiStatusView> => ((await (await fetch(`${g.url}/dam`)).json()) as { ai: AiStatusView }).ai;

  it('counts the line as the gate does', async () => {
    await waitFor('worker seen', async () => (await ai()).liveWorkers === 1);
    expect(await ai()).toEqual({ estimatedWaitMs: 0, maxWaitMs: 2000, queueDepth: 0, liveWorkers: 1, ratePerSec: 2, answering: 0, breaker: 'closed' });
    for (let i = 0; i < 3; i++) {
      const sse = await new SseClient(`${g.url}/chat/stream`).open();
      streams.push(sse);
      expect((await ask(g.url, await sse.session(), `q${i}`)).status).toBe(202);
    }
    // Three ahead at 2 answers/s: a question asked now would wait 1.5 s, under the 2 s limit.
    expect(await ai()).toMatchObject({ estimatedWaitMs: 1500, queueDepth: 3, ratePerSec: 2 });
  });
});
