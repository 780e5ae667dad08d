import { randomUUID } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { SseClient, TcpProxy, ask, startTestRedis, waitFor, type RedisHandle, type SseEvent } from '@traffic-dam/stack';
import { startInstance, type TestInstance } from '../testing/instance';
import { WorkerDouble } from '../testing/worker-double';

const messageIdOf = (e: SseEvent): string | undefined => (e.data as { messageId?: string }).messageId;

describe('what a client is told about a question is the truth (real Redis)', () => {
  let redis: RedisHandle;
  let proxy: TcpProxy;
  let worker: WorkerDouble;
  let gw: TestInstance;
  let probe: Redis;

  beforeAll(async () => {
    redis = await startTestRedis(mkdtempSync(join(tmpdir(), 'td-refused-')));
    const u = new URL(redis.url);
    proxy = await TcpProxy.start(u.hostname, Number(u.port));
    worker = new WorkerDouble(redis.url);
    await worker.start();
    // Only the gateway's connections go through the proxy; the worker and the probe do not.
    gw = await startInstance(proxy.url(redis.url), 'refused-a');
    probe = new Redis(redis.url);
  });

  afterAll(async () => {
    await worker?.stop();
    await gw?.app.close();
    probe?.disconnect();
    await proxy?.stop();
    await redis?.stop();
  });

  it('a question refused after its enqueue ran in Redis never produces an event on the stream', async () => {
    const sse = await new SseClient(`${gw.url}/chat/stream`).open();
    try {
      const s = await sse.session();
      const marker = `refuse-me-${randomUUID()}`;
      // The enqueue runs in Redis (the worker gets the question) but its reply, and the replies
      // after it on that connection, reach the gateway long past its Redis deadline.
      proxy.holdRepliesAfter(marker, 600);
      const r = await ask(gw.url, s, marker);
      expect({ status: r.status, code: (r.body as { code?: string }).code }).toEqual({ status: 503, code: 'redis_unavailable' });
      // The worker got it and answered it in full.
      await waitFor('the worker got the refused question', async () => worker.received.some((q) => q['question'] === marker));
      const refusedId = worker.received.find((q) => q['question'] === marker)?.['id'] as string;
      // The gateway tells the worker to stop once it learns the question had been queued.
      await waitFor('the refused question cancelled', async () => (await probe.exists(`td:cancel:${refusedId}`)) === 1, 5_000);
      // The next question is answered; its events come after any the refused one could have caused.
      let next = await ask(gw.url, s, 'and this one?');
      if (next.status === 409) {
        await waitFor('the in-flight claim gone', async () => (await probe.exists(`td:session:{${s.sessionId}}:inflight`)) === 0, 5_000);
        next = await ask(gw.url, s, 'and this one?');
      }
      expect(next.status).toBe(202);
      const nextId = (next.body as { messageId: string }).messageId;
      await sse.waitFor((e) => e.event === 'done' && messageIdOf(e) === nextId, 5_000);
      expect(sse.events.filter((e) => e.event !== 'session').map(messageIdOf)).toEqual([nextId, nextId, nextId, nextId]);
    } finally {
      sse.close();
    }
  });

  it('a reply for a messageId the session never issued is never sent to it', async () => {
    const sse = await new SseClient(`${gw.url}/chat/stream`).open();
    try {
      const s = await sse.session();
      const stranger = randomUUID();
      const channel = `td:replies:${gw.id}`;
      for (let seq = 0; seq < 2; seq++) {
        await probe.publish(channel, JSON.stringify({ type: 'token', messageId: stranger, sessionId: s.sessionId, seq, text: 'x' }));
      }
      await probe.publish(channel, JSON.stringify({ type: 'error', messageId: stranger, sessionId: s.sessionId, code: 'cancelled', message: 'x' }));
      const r = await ask(gw.url, s, 'a real one');
      expect(r.status).toBe(202);
      const id = (r.body as { messageId: string }).messageId;
      await sse.waitFor((e) => e.event === 'done' && messageIdOf(e) === id, 5_000);
      expect(sse.events.filter((e) => e.event !== 'session').map(messageIdOf)).toEqual([id, id, id, id]);
    } finally {
      sse.close();
    }
  });
});
