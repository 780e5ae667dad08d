import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { DeadLetterQueue } from '@traffic-dam/ai-bridge';
import { SseClient, ask, startTestRedis, waitFor, type RedisHandle } from '@traffic-dam/stack';
import { LifecycleService } from '../common/lifecycle.service';
import { startInstance, type TestInstance } from '../testing/instance';
import { WorkerDouble } from '../testing/worker-double';

async function damHeld(url: string): Promise<number> {
  return ((await (await fetch(`${url}/dam`)).json()) as { held: number }).held;
}

describe('graceful drain (real Redis)', () => {
  let redis: RedisHandle;
  let commands: Redis;
  let worker: WorkerDouble;
  let other: TestInstance;
  const opened: SseClient[] = [];

  beforeAll(async () => {
    redis = await startTestRedis(mkdtempSync(join(tmpdir(), 'td-drain-')));
    commands = new Redis(redis.url);
    worker = new WorkerDouble(redis.url);
    await worker.start();
    other = await startInstance(redis.url, 'drain-other');
  });

  afterAll(async () => {
    for (const s of opened) s.close();
    await worker.stop();
    await other.app.close();
    commands.disconnect();
    await redis.stop();
  });

  async function openOn(inst: TestInstance): Promise<{ sse: SseClient; s: { sessionId: string; token: string } }> {
    const sse = await new SseClient(`${inst.url}/chat/stream`).open();
    opened.push(sse);
    expect(sse.status).toBe(200);
    return { sse, s: await sse.session() };
  }

  it('refuses new streams and questions at once, expires idle sessions after the grace, frees the slots', async () => {
    // The in-flight limit far away: the drain ends when its sessions did, not at the limit.
    const a = await startInstance(redis.url, 'drain-a', { DRAIN_GRACE_MS: '600', DRAIN_INFLIGHT_MS: '60000' });
    try {
      const one = await openOn(a);
      const two = await openOn(a);
      expect(await damHeld(a.url)).toBe(2);
      const started = Date.now();
      const drained = a.app.get(LifecycleService).drain('graceful');

      const ready = await fetch(`${a.url}/health/ready`);
      expect(ready.status).toBe(503);
      expect(await ready.json()).toMatchObject({ draining: true });
      const refused = await new SseClient(`${a.url}/chat/stream`).open();
      expect(refused.status).toBe(503);
      expect(refused.headers.get('content-type')).toContain('application/problem+json');
      expect(refused.headers.get('retry-after')).toBe('1');
      expect(refused.refusal).toMatchObject({ code: 'draining', status: 503 });
      // Draining responses ask the proxy to drop the connection, so no keep-alive reuse reaches a closed socket.
      expect(refused.headers.get('connection')).toBe('close');

      // A question for a session of the draining instance fails clearly on any instance.
      const marked = async (id: string): Promise<boolean> => (await commands.hget(`td:session:{${id}}`, 'draining')) === '1';
      await waitFor('both sessions marked draining in Redis', async () => (await marked(one.s.sessionId)) && (await marked(two.s.sessionId)));
      const viaOther = await ask(other.url, one.s, 'still there?');
      expect(viaOther.status).toBe(503);
      expect(viaOther.body).toMatchObject({ code: 'draining' });
      const viaSelf = await ask(a.url, two.s, 'still there?');
      expect(viaSelf.status).toBe(503);

      const e1 = await one.sse.waitFor((e) => e.event === 'expired');
      const e2 = await two.sse.waitFor((e) => e.event === 'expired');
      expect(e1.data).toEqual({ reason: 'draining' });
      expect(e2.data).toEqual({ reason: 'draining' });
      // Not before the grace period: the load balancer had time to see readiness fall.
      expect(Date.now() - started).toBeGreaterThanOrEqual(600);
      expect(await one.sse.ended()).toBe(true);
      await waitFor('drain finished (long before its 60 s in-flight limit)', drained);
      expect(await damHeld(a.url)).toBe(0);
      // The session records are gone: a late question gets 404, not a hang.
      expect((await ask(other.url, one.s, 'late')).status).toBe(404);
    } finally {
      await a.app.close();
    }
  });

  it('lets an answer in flight finish, then expires its session right after done', async () => {
    // Pings every 100 ms; the in-flight limit far away: the drain ends when the answer did.
    const a = await startInstance(redis.url, 'drain-b', { DRAIN_GRACE_MS: '200', DRAIN_INFLIGHT_MS: '60000', SSE_PING_MS: '100' });
    try {
      const { sse, s } = await openOn(a);
      const idle = await openOn(a);
      worker.holdNext = true;
      const r = await ask(other.url, s, 'a slow one');
      expect(r.status).toBe(202);
      const { messageId } = r.body as { messageId: string };
      await waitFor('the question reached the worker', () => worker.received.some((q) => q['id'] === messageId));
      const drained = a.app.get(LifecycleService).drain('graceful');
      // Past the grace the drain expires the idle session; in the same round it looked at the busy
      // one. A ping on the busy stream after that proves it was still open, its answer running.
      await idle.sse.waitFor((e) => e.event === 'expired');
      const pings = sse.pings;
      await waitFor('a ping on the busy stream after the idle one expired', () => sse.pings > pings);
      expect(sse.closed).toBe(false);
      expect(sse.events.some((e) => e.event === 'expired')).toBe(false);
      worker.release();
      const done = await sse.waitFor((e) => e.event === 'done');
      expect(done.data).toMatchObject({ messageId, tokens: 3 });
      const expired = await sse.waitFor((e) => e.event === 'expired');
      expect(expired.data).toEqual({ reason: 'draining' });
      expect(sse.events.map((e) => e.event)).toEqual(['session', 'token', 'token', 'token', 'done', 'expired']);
      await waitFor('drain finished (long before its 60 s in-flight limit)', drained);
      expect(await damHeld(a.url)).toBe(0);
    } finally {
      await a.app.close();
    }
  });

  it('cuts an answer still running at the in-flight limit: error draining, and a dead letter with the question', async () => {
    const a = await startInstance(redis.url, 'drain-c', { DRAIN_GRACE_MS: '100', DRAIN_INFLIGHT_MS: '700' });
    const dlq = new DeadLetterQueue({ redis: commands });
    try {
      const before = await dlq.size();
      const { sse, s } = await openOn(a);
      worker.holdNext = true; // never answered while the test looks
      const r = await ask(a.url, s, 'cut-me-marker');
      expect(r.status).toBe(202);
      const { messageId } = r.body as { messageId: string };
      const started = Date.now();
      await a.app.get(LifecycleService).drain('graceful');
      const waited = Date.now() - started;
      expect(waited).toBeGreaterThanOrEqual(700);
      const err = await sse.waitFor((e) => e.event === 'failed');
      expect(err.data).toMatchObject({ messageId, code: 'draining' });
      const expired = await sse.waitFor((e) => e.event === 'expired');
      expect(expired.data).toEqual({ reason: 'draining' });
      expect(await dlq.size()).toBe(before + 1);
      const letters = await dlq.list(100);
      const letter = letters.find((d) => d.question.id === messageId);
      expect(letter).toMatchObject({ reason: 'draining', by: a.id, question: { question: 'cut-me-marker', sessionId: s.sessionId } });
      // The worker is told to stop: the cancel mark is set.
      expect(await commands.exists(`td:cancel:${messageId}`)).toBe(1);
      expect(await damHeld(a.url)).toBe(0);
      // A replay asks it again: back on the question stream, without the cancel mark that would stop it.
      const replayed = await dlq.replay(100);
      expect(replayed.replayed).toBeGreaterThanOrEqual(1);
      expect(await commands.exists(`td:cancel:${messageId}`)).toBe(0);
      await waitFor('replayed question received', async () => worker.received.filter((q) => q['id'] === messageId).length === 2);
      expect(worker.received.filter((q) => q['id'] === messageId).map((q) => q['attempt'])).toEqual(['1', '2']);
    } finally {
      worker.release();
      await a.app.close();
    }
  });

  it('app.close() alone drains at once', async () => {
    const a = await startInstance(redis.url, 'drain-d', { DRAIN_GRACE_MS: '60000', DRAIN_INFLIGHT_MS: '60000' });
    const { sse } = await openOn(a);
    await waitFor('app.close() returned (long before the 60 s grace)', a.app.close());
    const expired = await sse.waitFor((e) => e.event === 'expired');
    expect(expired.data).toEqual({ reason: 'draining' });
  });
});
