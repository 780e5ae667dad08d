import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { ManagedChild, SseClient, ask, freePort, httpOk, repoRoot, waitFor, type ChatSession, type Stack } from '@traffic-dam/stack';
import { metricValue, startE2eStack } from './e2e-stack';

/** llmock's journal entry of one request (times from CLOCK_MONOTONIC, the clock of process.hrtime). */
interface Upstream {
  status: number;
  completed: boolean;
  chunks_sent: number;
  started_at: number;
  ended_at: number;
  body: { messages: Array<{ content: string }> };
}

const monoSec = (): number => Number(process.hrtime.bigint()) / 1e9;
const CHUNK_MS = 100;

/**
 * The whole stack (nginx, 2 gateways, Redis, the worker) with AI_BACKEND=openai pointed at llmock,
 * an OpenAI-compatible mock server from PyPI that nobody here wrote (apps/ai-worker's dev venv):
 * one word per chunk every 100 ms, faults scripted per request through its admin API.
 */
describe('the stack with AI_BACKEND=openai against an OpenAI-compatible server', () => {
  let stack: Stack;
  let llmock: ManagedChild;
  let mock = '';
  let redis: Redis;

  const script = async (...behaviors: object[]) => {
    const r = await fetch(`${mock}/_llmock/scenario`, { method: 'POST', body: JSON.stringify({ behaviors }) });
    if (r.status !== 201) throw new Error(`llmock scenario: ${r.status}`);
  };
  const journal = async (): Promise<Upstream[]> => ((await (await fetch(`${mock}/_llmock/requests`)).json()) as { requests: Upstream[] }).requests;
  const requestFor = async (question: string) => (await journal()).filter((r) => r.body.messages.some((m) => m.content === question));

  const session = async (): Promise<{ sse: SseClient; s: ChatSession }> => {
    const sse = await new SseClient(`${stack.url}/chat/stream`).open();
    return { sse, s: await sse.session() };
  };
  const endOf = (sse: SseClient, messageId: string) =>
    sse.waitFor((e) => (e.event === 'done' || e.event === 'failed') && (e.data as { messageId: string }).messageId === messageId, 30_000);

  beforeAll(async () => {
    const dir = mkdtempSync(join(tmpdir(), 'td-e2e-openai-'));
    const port = await freePort();
    mock = `http://127.0.0.1:${port}`;
    llmock = new ManagedChild({
      name: 'llmock',
      command: join(repoRoot(), 'apps/ai-worker/.venv/bin/llmock'),
      args: ['serve', '--host', '127.0.0.1', '--port', String(port), '--response-style', 'echo', '--stream-chunk-delay-ms', String(CHUNK_MS), '--log-level', 'warning'],
      logFile: join(dir, 'llmock.log'),
    });
    await waitFor('llmock', () => httpOk(`${mock}/_llmock/scenario`), 30_000, llmock);
    stack = await startE2eStack({
      dir,
      env: { LOG_LEVEL: 'warn', DAM_BREAKER_MIN_VOLUME: '5', DAM_BREAKER_ERROR_RATIO: '0.5' },
      workerEnv: () => ({ AI_BACKEND: 'openai', AI_BASE_URL: `${mock}/v1`, AI_MODEL: 'mock-model', AI_STALL_TIMEOUT_MS: '1000' }),
    });
    redis = new Redis(stack.redisUrl);
  });

  afterAll(async () => {
    redis?.disconnect();
    await stack?.stop();
    await llmock?.stop();
  });

  it('streams the answer through SSE and reports its usage', async () => {
    const { sse, s } = await session();
    try {
      const r = await ask(stack.url, s, 'is the water high');
      expect(r.status).toBe(202);
      const { messageId } = r.body as { messageId: string };
      const end = await endOf(sse, messageId);
      expect(end.event).toBe('done');
      // The client hears what the answer cost too, in its done event.
      expect((end.data as { usage?: unknown }).usage).toMatchObject({ model: 'mock-model', counted: false });
      expect((end.data as { usage: { completionTokens: number } }).usage.completionTokens).toBeGreaterThan(0);
      const text = sse.events
        .filter((e) => e.event === 'token' && (e.data as { messageId: string }).messageId === messageId)
        .map((e) => (e.data as { text: string }).text)
        .join('');
      expect(text).toBe('Hello! You said: is the water high');
      // The usage chunk llmock sent, counted per model by the instance that relayed the answer.
      const gw = await Promise.all(stack.gateways.map((g) => metricValue(g.url, 'td_ai_tokens_total{model="mock-model",kind="completion"').catch(() => 0)));
      expect(gw.reduce((a, b) => a + b, 0)).toBeGreaterThan(0);
    } finally {
      sse.close();
    }
  });

  it('an upstream 429: the gateways answer 503 ai_overloaded with a Retry-After that ends no sooner than the upstream one', async () => {
    const retryAfterSec = 8;
    await script({ type: 'fail', status: 429, retry_after: retryAfterSec });
    const first = await session();
    const sessions = await Promise.all(Array.from({ length: 20 }, () => session()));
    try {
      const r = await ask(stack.url, first.s, 'first in line');
      expect(r.status).toBe(202);
      const firstId = (r.body as { messageId: string }).messageId;
      const throttled = await waitFor('the 429 reached llmock', async () => (await requestFor('first in line')).some((x) => x.status === 429), 10_000).then(
        async () => (await requestFor('first in line')).find((x) => x.status === 429) as Upstream,
      );
      // Until the workers' heartbeats reach the gateways, questions are still accepted; then refused.
      let refusal: { retryAfter: number; at: number; code: string } | null = null;
      const accepted: Array<{ sse: SseClient; id: string }> = [];
      for (const { sse, s } of sessions) {
        const at = monoSec();
        const a = await ask(stack.url, s, 'while throttled');
        if (a.status === 202) accepted.push({ sse, id: (a.body as { messageId: string }).messageId });
        else {
          refusal = { retryAfter: Number(a.headers.get('retry-after')), at, code: (a.body as { code: string }).code };
          break;
        }
        await new Promise((res) => setTimeout(res, 200));
      }
      expect(refusal).not.toBeNull();
      if (!refusal) return;
      expect(refusal.code).toBe('ai_overloaded');
      // The client is told to come back no sooner than the model server allows (one monotonic clock).
      expect(refusal.at + refusal.retryAfter).toBeGreaterThanOrEqual(throttled.ended_at + retryAfterSec);
      // Every accepted question is answered once the Retry-After has passed.
      expect((await endOf(first.sse, firstId)).event).toBe('done');
      for (const a of accepted) expect((await endOf(a.sse, a.id)).event).toBe('done');
      const retried = (await requestFor('first in line')).find((x) => x.status === 200) as Upstream;
      expect(retried.started_at).toBeGreaterThanOrEqual(throttled.ended_at + retryAfterSec - 0.05);
    } finally {
      first.sse.close();
      for (const x of sessions) x.sse.close();
    }
  });

  // A stream that only drops keeps its session for the resume window (SSE_RESUME_MS) and is then
  // closed the same way (cancel.e2e-spec.ts has both); DELETE closes it at once.
  it('a client that closes its session mid-answer (DELETE): the upstream connection is closed within a token', async () => {
    const question = Array.from({ length: 60 }, (_, i) => `drop${i}`).join(' ');
    const { sse, s } = await session();
    const r = await ask(stack.url, s, question);
    expect(r.status).toBe(202);
    await sse.waitFor((e) => e.event === 'token' && (e.data as { seq: number }).seq >= 3, 15_000);
    const del = await fetch(`${stack.url}/chat/sessions/${s.sessionId}`, { method: 'DELETE', headers: { Authorization: `Bearer ${s.token}` } });
    expect(del.status).toBe(204);
    const seen = sse.events.filter((e) => e.event === 'token').length;
    sse.close();
    await waitFor('llmock saw its client go', async () => (await requestFor(question)).some((x) => !x.completed && x.ended_at > x.started_at), 15_000);
    const [req] = await requestFor(question);
    process.stdout.write(`client dropped after ${seen} tokens; llmock had sent ${req?.chunks_sent} chunks (1 role chunk + tokens) of 63\n`);
    // The role chunk, the tokens the client saw, the one the gateway relayed as it closed, and the
    // one the worker held when it read the cancel: never the rest of the answer.
    expect(req?.chunks_sent).toBeLessThanOrEqual(1 + seen + 2);
  });

  it('an upstream stall: the client gets error worker_error, the breaker counts it and opens, accepted = answered + dead-lettered', async () => {
    const dlqBefore = await redis.xlen('td:dlq');
    const n = 8;
    await script(...Array.from({ length: n }, () => ({ type: 'stream_fault', kind: 'stall', after_chunks: 3, stall_seconds: 60 })));
    const sessions = await Promise.all(Array.from({ length: n }, () => session()));
    try {
      const ids = await Promise.all(
        sessions.map(async ({ s }, i) => {
          const a = await ask(stack.url, s, `stall ${i}`);
          expect(a.status).toBe(202);
          return (a.body as { messageId: string }).messageId;
        }),
      );
      const ends = await Promise.all(sessions.map(({ sse }, i) => endOf(sse, ids[i] as string)));
      for (const e of ends) expect(e.data).toMatchObject({ code: 'worker_error', message: expect.stringContaining('sent nothing for 1000 ms') });
      // Every one of them dead-lettered (none answered).
      await waitFor('dead-lettered', async () => (await redis.xlen('td:dlq')) - dlqBefore >= n, 10_000);
      const letters = (await redis.xrange('td:dlq', '-', '+')).map(([, f]) => Object.fromEntries(Array.from({ length: f.length / 2 }, (_, k) => [f[2 * k], f[2 * k + 1]])));
      expect(letters.filter((l) => ids.includes(l['id'] as string)).map((l) => l['reason'])).toEqual(Array(n).fill('worker_error'));
      // Counted by the breaker: 8 failures in its window open it for every instance.
      await waitFor('breaker open', async () => (await metricValue(stack.url, 'td_breaker_state')) === 2, 10_000);
      const after = await ask(stack.url, (sessions[0] as { s: ChatSession }).s, 'are you there?');
      expect(after.status).toBe(503);
      expect((after.body as { code: string }).code).toBe('ai_unavailable');
    } finally {
      for (const x of sessions) x.sse.close();
    }
  });
});
