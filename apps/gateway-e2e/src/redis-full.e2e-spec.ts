import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { SseClient, ask, fillRedisMemory, freeRedisMemory, waitFor, type ChatSession, type Stack } from '@traffic-dam/stack';
import { metricValue, startE2eStack } from './e2e-stack';

interface DamView {
  held: number;
  fallback: { active: boolean; reason: string | null };
  global: { used: number; capacity: number; stale: boolean } | null;
}

const dam = async (url: string): Promise<DamView> => (await (await fetch(`${url}/dam`)).json()) as DamView;
/** The sum of every series whose line starts with `prefix` (a name and some of its labels). */
async function metricSum(url: string, prefix: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  return text
    .split('\n')
    .filter((l) => l.startsWith(prefix))
    .reduce((a, l) => a + Number(l.slice(l.lastIndexOf(' ') + 1)), 0);
}
const idOf = (r: { body: unknown }) => (r.body as { messageId: string }).messageId;
const isEnd = (messageId: string) => (e: { event: string; data: unknown }) =>
  (e.event === 'done' || e.event === 'failed') && (e.data as { messageId?: string }).messageId === messageId;

describe('Redis at its memory limit (maxmemory, noeviction)', () => {
  let stack: Stack;
  let admin: Redis;
  const streams: SseClient[] = [];

  beforeAll(async () => {
    stack = await startE2eStack({
      env: { LOG_LEVEL: 'info' },
      // ~2 s answers: one is still running when Redis fills up.
      workerEnv: () => ({ AI_TTFT_MS: '100', AI_TOKENS_PER_SEC: '10', AI_ANSWER_TOKENS: '20' }),
    });
    admin = new Redis(stack.redisUrl);
  });

  afterAll(async () => {
    for (const s of streams) s.close();
    await freeRedisMemory(admin).catch(() => undefined);
    admin.disconnect();
    await stack?.stop();
  });

  async function open(): Promise<{ sse: SseClient; s: ChatSession }> {
    const sse = await new SseClient(`${stack.url}/chat/stream`).open();
    streams.push(sse);
    expect(sse.status).toBe(200);
    return { sse, s: await sse.session() };
  }

  it('keeps answering (local admissions, 503 redis_unavailable for questions), loses no accepted question, shows it, and recovers by itself', async () => {
    const accepted: Array<{ sse: SseClient; messageId: string }> = [];
    const before = await Promise.all(Array.from({ length: 4 }, () => open()));
    const [running, ...idle] = before as [{ sse: SseClient; s: ChatSession }, ...Array<{ sse: SseClient; s: ChatSession }>];
    const r = await ask(stack.url, running.s, 'a long answer, running while Redis fills');
    expect(r.status).toBe(202);
    accepted.push({ sse: running.sse, messageId: idOf(r) });
    await running.sse.waitFor((e) => e.event === 'token' && (e.data as { messageId: string }).messageId === idOf(r));

    await fillRedisMemory(admin);
    try {
      await expect(admin.set('td:test:probe', '1')).rejects.toThrow(/^OOM command not allowed/);

      // Both gateways see it: their heartbeats are refused, so the dam decides on the local share.
      await waitFor('both gateways in fallback for Redis out of memory', async () =>
        (await Promise.all(stack.gateways.map((g) => dam(g.url)))).every((v) => v.fallback.active && v.fallback.reason === 'oom'),
      );
      for (const g of stack.gateways) expect(await metricValue(g.url, 'td_redis_out_of_memory')).toBe(1);

      // The answer that was running when Redis filled up still ends, with done: tokens are Pub/Sub.
      const end = await running.sse.waitFor(isEnd(idOf(r)));
      expect(end.event).toBe('done');

      // New streams are admitted (the local share), their sessions kept here until Redis takes writes.
      const during = await Promise.all(Array.from({ length: 4 }, () => open()));
      // Questions are refused clearly, on old and new sessions alike, and nothing is queued.
      for (const { s } of [...idle, ...during]) {
        const q = await ask(stack.url, s, 'asked while Redis is full');
        expect({ status: q.status, code: (q.body as { code?: string }).code }).toEqual({ status: 503, code: 'redis_unavailable' });
        expect((q.body as { detail: string }).detail).toMatch(/memory limit/);
        expect(Number(q.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
      }
      // Counted: the session writes of the new streams and the claims of the old sessions.
      const oomErrors = await Promise.all(stack.gateways.map((g) => metricSum(g.url, 'td_redis_errors_total{kind="oom"')));
      expect(oomErrors.reduce((a, n) => a + n, 0)).toBeGreaterThanOrEqual(idle.length + during.length);
      for (const g of stack.gateways) {
        expect(g.child.running).toBe(true);
        expect((await fetch(`${g.url}/health/live`)).status).toBe(200);
      }
      // The sessions opened during the outage recover too: remembered for after.
      before.push(...during);
    } finally {
      await freeRedisMemory(admin);
    }

    // Memory freed: everything comes back by itself.
    await waitFor('both gateways out of fallback', async () =>
      (await Promise.all(stack.gateways.map((g) => dam(g.url)))).every((v) => !v.fallback.active && v.fallback.reason === null),
    );
    for (const g of stack.gateways) expect(await metricValue(g.url, 'td_redis_out_of_memory')).toBe(0);
    // Each session opened during the outage is written to Redis (by the instance that holds it).
    await waitFor('every session in Redis', async () => {
      const exists = await Promise.all(before.map(({ s }) => admin.exists(`td:session:{${s.sessionId}}`)));
      return exists.every((n) => n === 1);
    });
    // The worker's heartbeat is refused too while Redis is full; an outage longer than its TTL
    // reads as "no worker alive" and opens the breaker, which closes on its next probe.
    await waitFor('the breaker closed on both gateways', async () =>
      (await Promise.all(stack.gateways.map((g) => metricValue(g.url, 'td_breaker_state')))).every((v) => v === 0),
    );
    // Every session, opened before or during, takes a question again and gets its answer.
    const again = await Promise.all(before.map(async ({ sse, s }) => ({ sse, r: await ask(stack.url, s, 'and now?') })));
    // Status and code side by side, so a refusal here says which one it was.
    expect(again.map(({ r }) => ({ status: r.status, code: (r.body as { code?: string }).code }))).toEqual(before.map(() => ({ status: 202, code: undefined })));
    accepted.push(...again.map(({ sse, r }) => ({ sse, messageId: idOf(r) })));
    const ends = await Promise.all(accepted.map(({ sse, messageId }) => sse.waitFor(isEnd(messageId))));
    expect(ends.map((e) => e.event)).toEqual(accepted.map(() => 'done'));

    // The budget is reconciled: Redis counts what the gateways hold.
    await waitFor('budget reconciled', async () => {
      const views = await Promise.all(stack.gateways.map((g) => dam(g.url)));
      const held = views.reduce((a, v) => a + v.held, 0);
      return held === before.length && views.every((v) => v.global?.used === held && !v.global.stale);
    });

    // Failing writes were counted, not logged one line each: a few lines per gateway at most.
    for (const g of stack.gateways) {
      const lines = readFileSync(join(stack.opts.dir, `gateway${g.index}.log`), 'utf8').split('\n');
      const oomLines = lines.filter((l) => l.includes('"kind":"oom"'));
      expect(oomLines.length).toBeLessThanOrEqual(6);
      expect(lines.filter((l) => l.includes('"stack"'))).toEqual([]);
    }
  });
});
