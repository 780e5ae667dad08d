import { Redis } from 'ioredis';
import { SseClient, ask, waitFor, type ChatSession, type Stack } from '@traffic-dam/stack';
import { startE2eStack, watchReplies } from './e2e-stack';

describe('a client that drops mid-answer', () => {
  let stack: Stack;
  let sub: Redis;
  let probe: Redis;
  /** Replies the worker published, per message id, with when they were seen. */
  const seen = new Map<string, Array<{ type: string; at: number }>>();

  beforeAll(async () => {
    // 10 tokens/s: one token every 100 ms, so "one more token" is a clear count; 100 tokens outlast
    // the default resume window (SSE_RESUME_MS, 5 s).
    stack = await startE2eStack({ env: { LOG_LEVEL: 'warn' }, workerEnv: () => ({ AI_TTFT_MS: '50', AI_TOKENS_PER_SEC: '10', AI_ANSWER_TOKENS: '100' }) });
    probe = new Redis(stack.redisUrl);
    // Single replies and the entries of batches, as the worker publishes them.
    sub = await watchReplies(stack.redisUrl, (m) => {
      seen.set(m.messageId, [...(seen.get(m.messageId) ?? []), { type: m.type, at: Date.now() }]);
    });
  });

  afterAll(async () => {
    sub?.disconnect();
    probe?.disconnect();
    await stack?.stop();
  });

  const held = async (): Promise<number[]> =>
    Promise.all(stack.gateways.map(async (g) => ((await (await fetch(`${g.url}/dam`)).json()) as { held: number }).held));
  const tokensOf = (messageId: string, after: number) => (seen.get(messageId) ?? []).filter((m) => m.type === 'token' && m.at > after).length;

  async function midAnswer(): Promise<{ sse: SseClient; s: ChatSession; messageId: string }> {
    const sse = await new SseClient(`${stack.url}/chat/stream`).open();
    const s = await sse.session();
    const r = await ask(stack.url, s, 'tell me a long story');
    expect(r.status).toBe(202);
    const { messageId } = r.body as { messageId: string };
    await sse.waitFor((e) => e.event === 'token' && (e.data as { seq: number }).seq >= 3, 10_000);
    return { sse, s, messageId };
  }

  /** Nothing pending for the worker, no session left, nothing dead-lettered: cancelled is not failed. */
  async function nothingLeft(dlqBefore: number, messageId: string): Promise<void> {
    await waitFor('acknowledged', async () => ((await probe.xpending('td:questions', 'workers')) as [number])[0] === 0, 5_000);
    await waitFor('sessions gone', async () => (await probe.keys('td:session:*')).length === 0, 5_000);
    expect((seen.get(messageId) ?? []).some((m) => m.type === 'done')).toBe(false);
    expect(await probe.xlen('td:dlq')).toBe(dlqBefore);
  }

  it('that does not come back: the answer goes on while it may resume (SSE_RESUME_MS), then the worker stops within one token and the slot returns', async () => {
    const dlqBefore = await probe.xlen('td:dlq');
    const { sse, messageId } = await midAnswer();
    const droppedAt = Date.now();
    sse.close();
    // The slot is held for the window, then released: when it is, the session is over.
    let releasedAt = 0;
    await waitFor(
      'slot released after the window',
      async () => {
        const ok = (await held()).every((h) => h === 0);
        if (ok) releasedAt = Date.now();
        return ok;
      },
      15_000,
    );
    const during = tokensOf(messageId, droppedAt) - tokensOf(messageId, releasedAt);
    process.stdout.write(`tokens generated in the resume window: ${during}; after it: ${tokensOf(messageId, releasedAt)}\n`);
    expect(during).toBeGreaterThan(1);
    await nothingLeft(dlqBefore, messageId);
    expect(tokensOf(messageId, releasedAt)).toBeLessThanOrEqual(1);
  });

  it('that closes its session (DELETE): the worker stops within one token at once, and the slot returns', async () => {
    const dlqBefore = await probe.xlen('td:dlq');
    const { sse, s, messageId } = await midAnswer();
    const del = await fetch(`${stack.url}/chat/sessions/${s.sessionId}`, { method: 'DELETE', headers: { Authorization: `Bearer ${s.token}` } });
    expect(del.status).toBe(204);
    const deletedAt = Date.now();
    sse.close();
    await waitFor('slot released', async () => (await held()).every((h) => h === 0), 5_000);
    await nothingLeft(dlqBefore, messageId);
    process.stdout.write(`tokens generated after DELETE: ${tokensOf(messageId, deletedAt)}\n`);
    expect(tokensOf(messageId, deletedAt)).toBeLessThanOrEqual(1);
  });
});
