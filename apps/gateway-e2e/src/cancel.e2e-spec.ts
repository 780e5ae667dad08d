import { Redis } from 'ioredis';
import { SseClient, ask, waitFor, type Stack } from '@traffic-dam/stack';
import { startE2eStack, watchReplies } from './e2e-stack';

describe('a client that drops mid-answer', () => {
  let stack: Stack;

  beforeAll(async () => {
    // 10 tokens/s: one token every 100 ms, so "one more token" is a clear count.
    stack = await startE2eStack({ env: { LOG_LEVEL: 'warn' }, workerEnv: () => ({ AI_TTFT_MS: '50', AI_TOKENS_PER_SEC: '10', AI_ANSWER_TOKENS: '40' }) });
  });

  afterAll(async () => {
    await stack?.stop();
  });

  it('stops the worker within one token, frees the slot, and leaves no question in flight', async () => {
    const probe = new Redis(stack.redisUrl);
    const seen: Array<{ type: string; at: number }> = [];
    let messageId = '';
    const sub = await watchReplies(stack.redisUrl, (m) => {
      if (m.messageId === messageId) seen.push({ type: m.type, at: Date.now() });
    });
    const dlqBefore = await probe.xlen('td:dlq');
    try {
      const sse = await new SseClient(`${stack.url}/chat/stream`).open();
      const s = await sse.session();
      const r = await ask(stack.url, s, 'tell me a long story');
      expect(r.status).toBe(202);
      messageId = (r.body as { messageId: string }).messageId;
      await sse.waitFor((e) => e.event === 'token' && (e.data as { seq: number }).seq >= 3, 10_000);
      const droppedAt = Date.now();
      sse.close();
      // The worker's own end of the answer, on the same channel after any token it sent: the
      // cancel it saw (a worker that did not stop would send its tokens, then done).
      await waitFor('the worker ended the answer', () => seen.some((m) => m.type === 'error' || m.type === 'done'));
      expect(seen.filter((m) => m.type === 'error' || m.type === 'done').map((m) => m.type)).toEqual(['error']);
      const after = seen.filter((m) => m.type === 'token' && m.at > droppedAt);
      process.stdout.write(`tokens generated after the client dropped: ${after.length}\n`);
      expect(after.length).toBeLessThanOrEqual(1);
      expect(seen.some((m) => m.type === 'done')).toBe(false);
      // The slot and the session are gone; nothing stays pending for the worker.
      await waitFor('released', async () => {
        const views = await Promise.all(stack.gateways.map(async (g) => ((await (await fetch(`${g.url}/dam`)).json()) as { held: number }).held));
        return views.every((h) => h === 0) && (await probe.keys('td:session:*')).length === 0;
      });
      await waitFor('acknowledged', async () => ((await probe.xpending('td:questions', 'workers')) as [number])[0] === 0);
      // Cancelled is not failed: the dead-letter queue did not grow.
      expect(await probe.xlen('td:dlq')).toBe(dlqBefore);
    } finally {
      sub.disconnect();
      probe.disconnect();
    }
  });
});
