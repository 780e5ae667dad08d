import { Redis } from 'ioredis';
import { SseClient, ask, waitFor, type Stack } from '@traffic-dam/stack';
import { metricValue, startE2eStack } from './e2e-stack';

interface UserRun {
  owner: string;
  postedTo: string;
  messageId: string;
  tokens: number;
  seqs: number[];
  foreignEvents: number;
}

describe('chat through nginx with 2 gateways, Redis and the Python worker', () => {
  let stack: Stack;

  beforeAll(async () => {
    stack = await startE2eStack({ env: { SSE_PING_MS: '300' }, workerEnv: () => ({ AI_TTFT_MS: '100', AI_TOKENS_PER_SEC: '100', AI_ANSWER_TOKENS: '12' }) });
  });

  afterAll(async () => {
    await stack?.stop();
  });

  it('50 concurrent users each get their own complete answer, wherever their POST lands', async () => {
    const base = stack.url;
    // The worker batches the replies bound for one gateway (WORKER_REPLY_BATCH_MS): what it
    // published is watched, so the answers below are known to have come in batches.
    const watch = new Redis(stack.redisUrl);
    const perBatch: number[] = [];
    watch.on('pmessage', (_p: string, _c: string, payload: string) => perBatch.push((JSON.parse(payload) as { replies: unknown[] }).replies.length));
    await watch.psubscribe('td:reply-batches:*');
    async function user(i: number): Promise<UserRun> {
      const sse = await new SseClient(`${base}/chat/stream`).open();
      try {
        expect(sse.status).toBe(200);
        const s = await sse.session();
        const res = await ask(base, s, `question number ${i}: what is flow control?`);
        expect(res.status).toBe(202);
        const { messageId } = res.body as { messageId: string };
        const done = await sse.waitFor((e) => e.event === 'done' || e.event === 'failed', 30_000);
        expect(done.event).toBe('done');
        const mine = (e: { data: unknown }) => (e.data as { messageId?: string }).messageId === messageId;
        const tokenEvents = sse.events.filter((e) => e.event === 'token');
        const run: UserRun = {
          owner: s.instanceId,
          postedTo: res.headers.get('x-instance-id') ?? '',
          messageId,
          tokens: (done.data as { tokens: number }).tokens,
          seqs: tokenEvents.filter(mine).map((e) => (e.data as { seq: number }).seq),
          foreignEvents: sse.events.filter((e) => e.event !== 'session' && !mine(e)).length,
        };
        // Half close by DELETE (any instance), half by dropping the stream.
        if (i % 2 === 0) {
          const del = await fetch(`${base}/chat/sessions/${s.sessionId}`, { method: 'DELETE', headers: { Authorization: `Bearer ${s.token}` } });
          expect(del.status).toBe(204);
          expect(await sse.ended(5_000)).toBe(true);
        }
        return run;
      } finally {
        sse.close();
      }
    }

    const runs = await Promise.all(Array.from({ length: 50 }, (_, i) => user(i)));
    watch.disconnect();
    process.stdout.write(`reply batches: ${perBatch.length}, replies in them ${perBatch.reduce((a, n) => a + n, 0)}, largest ${Math.max(0, ...perBatch)}\n`);
    expect(perBatch.some((n) => n > 1)).toBe(true);
    // Every token in order, each seq once, under batching.
    for (const r of runs) {
      expect(r.tokens).toBe(12);
      expect(r.seqs).toEqual(Array.from({ length: 12 }, (_, k) => k));
      expect(r.foreignEvents).toBe(0);
    }
    expect(new Set(runs.map((r) => r.messageId)).size).toBe(50);
    const ids = stack.gateways.length;
    expect(new Set(runs.map((r) => r.owner)).size).toBe(ids);
    expect(new Set(runs.map((r) => r.postedTo)).size).toBe(ids);
    // The point of the test: answers reach the stream even when the POST went elsewhere.
    expect(runs.filter((r) => r.postedTo !== r.owner).length).toBeGreaterThan(0);

    // Nothing leaks: every session is gone from both gateways and from Redis.
    const probe = new Redis(stack.redisUrl);
    try {
      await waitFor('sessions released', async () => {
        const open = await Promise.all(stack.gateways.map((g) => metricValue(g.url, 'td_sse_sessions_open')));
        const keys = await probe.keys('td:session:*');
        return open.every((n) => n === 0) && keys.length === 0;
      });
      const pending = (await probe.xpending('td:questions', 'workers')) as [number, ...unknown[]];
      expect(pending[0]).toBe(0);
    } finally {
      probe.disconnect();
    }
  });

  it('speaks SSE safely through nginx: headers, first event, ping', async () => {
    const res = await fetch(`${stack.url}/chat/stream`, { signal: AbortSignal.timeout(5_000) });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toContain('text/event-stream');
    expect(res.headers.get('x-request-id')).toBeTruthy();
    const body = res.body;
    if (!body) throw new Error('no body');
    const reader = body.getReader();
    // Unbuffered: the stream's head (the reconnect delay, then the session event) comes at once.
    let first = '';
    while (!first.includes('event: session\n')) {
      const { value, done } = await reader.read();
      if (done) break;
      first += new TextDecoder().decode(value);
    }
    expect(first).toMatch(/^retry: 1000\n\nid: [A-Za-z0-9_-]{22}\.1\nevent: session\n/);
    await reader.cancel();
    // Pings pass nginx unbuffered (the gateways here ping every 300 ms).
    const sse = await new SseClient(`${stack.url}/chat/stream`).open();
    await sse.session();
    await waitFor('two pings through nginx', () => sse.pings >= 2);
    sse.close();
  });

  it('keeps a request id from the client through nginx', async () => {
    const res = await fetch(`${stack.url}/health/live`, { headers: { 'X-Request-Id': 'e2e-trace-42' } });
    expect(res.headers.get('x-request-id')).toBe('e2e-trace-42');
  });

  it('refuses a bad POST through nginx without hurting anyone', async () => {
    const sse = await new SseClient(`${stack.url}/chat/stream`).open();
    try {
      const s = await sse.session();
      const bad = await fetch(`${stack.url}/chat/sessions/${s.sessionId}/messages`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${s.token}` },
        body: '{"question": nope}',
      });
      expect(bad.status).toBe(400);
      expect(((await bad.json()) as { code: string }).code).toBe('bad_json');
      const good = await ask(stack.url, s, 'still fine?');
      expect(good.status).toBe(202);
      expect((await sse.waitFor((e) => e.event === 'done', 15_000)).event).toBe('done');
    } finally {
      sse.close();
    }
  });
});
