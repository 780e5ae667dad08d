import { randomUUID } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { SseClient, ask, startTestRedis, waitFor, type ChatSession, type RedisHandle } from '@traffic-dam/stack';
import { LifecycleService } from '../common/lifecycle.service';
import { startInstance, type TestInstance } from '../testing/instance';

const APP = 'https://app.example.com';

/** Two instances alike but for the fast path: `fast` answers refusals on the raw request, `framework` through Express and Nest. */
interface Pair {
  fast: TestInstance;
  framework: TestInstance;
}

interface Answer {
  status: number;
  headers: Record<string, string>;
  body: string;
}

// Differ by design between two instances (their ids, the time) or by a jitter (Retry-After and the
// RateLimit reset that repeats it): compared by shape instead.
const OWN = new Set(['date', 'x-instance-id', 'retry-after', 'ratelimit']);

async function send(url: string, init: { method?: string; headers?: Record<string, string>; body?: string } = {}): Promise<Answer> {
  const res = await fetch(url, { method: init.method ?? 'GET', headers: init.headers, body: init.body });
  return { status: res.status, headers: Object.fromEntries(res.headers), body: await res.text() };
}

/** Sends the same request to both and checks that they answer alike; returns the fast one's answer. */
async function same(p: Pair, path: string, init: { method?: string; headers?: Record<string, string>; body?: string } = {}): Promise<Answer> {
  const headers = { 'X-Request-Id': `same-${randomUUID()}`, ...init.headers };
  const [f, s] = await Promise.all([send(`${p.fast.url}${path}`, { ...init, headers }), send(`${p.framework.url}${path}`, { ...init, headers })]);
  expect(f.status).toBe(s.status);
  const rest = (a: Answer) => Object.fromEntries(Object.entries(a.headers).filter(([k]) => !OWN.has(k)));
  expect(rest(f)).toEqual(rest(s));
  expect(f.headers['x-instance-id']).toBe(p.fast.id);
  expect(s.headers['x-instance-id']).toBe(p.framework.id);
  for (const a of [f, s]) {
    expect(a.headers['x-request-id']).toBe(headers['X-Request-Id']);
    if (a.headers['retry-after'] !== undefined) expect(a.headers['retry-after']).toMatch(/^[1-9]\d*$/);
    if (a.headers['ratelimit'] !== undefined) expect(a.headers['ratelimit']).toBe(`"sessions";r=0;t=${a.headers['retry-after']}`);
  }
  expect(Object.keys(f.headers).filter((k) => OWN.has(k)).sort()).toEqual(Object.keys(s.headers).filter((k) => OWN.has(k)).sort());
  expect(bodyOf(f)).toEqual(bodyOf(s));
  return f;
}

/** The problem, or the refused event's problem; retryAfterMs (jittered) checked against its own retry: line. */
function bodyOf(a: Answer): unknown {
  if (!a.headers['content-type']?.startsWith('text/event-stream')) return a.body === '' ? '' : JSON.parse(a.body);
  const m = /^retry: (\d+)\nevent: refused\ndata: (.*)\n\n$/.exec(a.body);
  if (!m) throw new Error(`not a refused event: ${JSON.stringify(a.body)}`);
  const { retryAfterMs, rateLimit, ...problem } = JSON.parse(m[2] as string) as { retryAfterMs: number; rateLimit?: { resetSec: number } };
  expect(retryAfterMs).toBe(Number(m[1]));
  expect(retryAfterMs).toBe(Number(a.headers['retry-after']) * 1_000);
  if (rateLimit === undefined) return problem;
  const { resetSec, ...limit } = rateLimit;
  expect(resetSec * 1_000).toBe(retryAfterMs);
  return { ...problem, rateLimit: limit };
}

/** The value of one series in an instance's /metrics, 0 when it has none. */
async function metric(i: TestInstance, name: string, labels: string): Promise<number> {
  const text = await (await fetch(`${i.url}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name}{`) && l.includes(labels));
  return line ? Number(line.slice(line.lastIndexOf(' ') + 1)) : 0;
}

async function counted(p: Pair, name: string, labels: string): Promise<[number, number]> {
  return [await metric(p.fast, name, labels), await metric(p.framework, name, labels)];
}

describe('fast refusals answer exactly what the framework answers (real Redis)', () => {
  let redis: RedisHandle;
  let commands: Redis;
  const streams: SseClient[] = [];

  beforeAll(async () => {
    redis = await startTestRedis(mkdtempSync(join(tmpdir(), 'td-fast-refusals-')));
    commands = new Redis(redis.url);
  });

  afterAll(async () => {
    commands?.disconnect();
    await redis?.stop();
  });

  async function pair(env: Record<string, string>, before?: () => Promise<void>): Promise<Pair> {
    await commands.flushall();
    await before?.();
    const [fast, framework] = await Promise.all([
      startInstance(redis.url, `fast-${randomUUID().slice(0, 4)}`, env),
      startInstance(redis.url, `framework-${randomUUID().slice(0, 4)}`, { ...env, FAST_REFUSALS: 'false' }),
    ]);
    return { fast, framework };
  }

  async function close(p: Pair): Promise<void> {
    for (const s of streams.splice(0)) s.close();
    await Promise.all([p.fast.app.close(), p.framework.app.close()]);
  }

  async function openOn(i: TestInstance): Promise<ChatSession> {
    const sse = await new SseClient(`${i.url}/chat/stream`).open();
    streams.push(sse);
    expect(sse.status).toBe(200);
    return sse.session();
  }

  it('429 dam_full at the ceiling: the problem, the refused event, CORS; counted alike', async () => {
    const p = await pair({ DAM_SLOTS_PER_INSTANCE: '1', CORS_ORIGINS: APP });
    try {
      await Promise.all([openOn(p.fast), openOn(p.framework)]);
      // Both have seen the whole cluster, so both give the same RateLimit-Policy (q = its capacity).
      await waitFor('both instances see the capacity of two', async () => {
        const c = await counted(p, 'td_dam_global_capacity', 'instance_id');
        return c[0] === 2 && c[1] === 2;
      });
      const plain = await same(p, '/chat/stream?lang=en', { headers: { Accept: 'text/event-stream' } });
      expect(plain.status).toBe(429);
      expect(JSON.parse(plain.body)).toMatchObject({ code: 'dam_full', instance: '/chat/stream?lang=en' });
      expect(plain.headers['ratelimit-policy']).toBe('"sessions";q=2');
      const event = await same(p, '/chat/stream?refusal=event');
      expect(event.status).toBe(200);
      const cors = await same(p, '/chat/stream', { headers: { Origin: APP } });
      expect(cors.headers['access-control-allow-origin']).toBe(APP);
      expect(cors.headers['access-control-expose-headers']).toContain('Retry-After');
      await same(p, '/chat/stream', { headers: { Origin: 'https://evil.example.net' } });
      // The resume of an id nobody issued, and a ticket nobody issued: past the fast path, alike.
      expect((await same(p, '/chat/stream', { headers: { 'Last-Event-ID': 'end' } })).status).toBe(204);
      await same(p, '/chat/stream?ticket=nope');

      expect(await counted(p, 'td_dam_refused_total', 'reason="instance_full"')).toEqual([4, 4]);
      // The refused event is a 200 stream, not a problem: counted as a request, not as a refusal.
      expect(await counted(p, 'td_http_refusals_total', 'route="/chat/stream",code="dam_full"')).toEqual([3, 3]);
      expect(await counted(p, 'td_http_requests_total', 'method="GET",route="/chat/stream",status="429"')).toEqual([3, 3]);
      // (The stream held open is counted when it closes.)
      expect(await counted(p, 'td_http_requests_total', 'method="GET",route="/chat/stream",status="200"')).toEqual([1, 1]);
    } finally {
      await close(p);
    }
  });

  it('503 draining: every stream, a resume too, with Connection: close', async () => {
    const p = await pair({});
    try {
      void p.fast.app.get(LifecycleService).drain('immediate');
      void p.framework.app.get(LifecycleService).drain('immediate');
      const a = await same(p, '/chat/stream');
      expect(a.status).toBe(503);
      expect(a.headers['connection']).toBe('close');
      expect(JSON.parse(a.body)).toMatchObject({ code: 'draining' });
      await same(p, '/chat/stream?refusal=event', { headers: { 'Last-Event-ID': 'abc.1' } });
      expect(await counted(p, 'td_http_refusals_total', 'code="draining"')).toEqual([2, 2]);
    } finally {
      await close(p);
    }
  });

  it('503 ai_unavailable with the breaker open (no worker alive): before the body, whatever it is', async () => {
    const p = await pair({});
    try {
      await waitFor('the breaker open on both', async () => {
        const c = await counted(p, 'td_breaker_state', 'instance_id');
        return c[0] === 2 && c[1] === 2;
      });
      const a = await same(p, `/chat/sessions/${randomUUID()}/messages`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: '{"question":' });
      expect(a.status).toBe(503);
      expect(JSON.parse(a.body)).toMatchObject({ code: 'ai_unavailable' });
      await same(p, '/chat/sessions/whatever/messages', { method: 'POST' });
      expect(await counted(p, 'td_ai_refused_total', 'reason="breaker_open"')).toEqual([2, 2]);
      expect(await counted(p, 'td_http_refusals_total', 'route="/chat/sessions/:id/messages",code="ai_unavailable"')).toEqual([2, 2]);
    } finally {
      await close(p);
    }
  });

  it('503 ai_overloaded on a known overload, after the body is read and checked, as the framework does', async () => {
    // One worker that declares 1 answer/s and never reads: at most 1 s of wait, the line holds 2.
    const p = await pair({ DAM_MAX_QUEUE_WAIT_MS: '1000' }, async () => {
      await commands.xgroup('CREATE', 'td:questions', 'workers', '$', 'MKSTREAM');
      await commands.set('td:workers:w', JSON.stringify({ workerId: 'w', capacityPerSec: 1, throughputPerSec: 0, inFlight: 0, answering: 0, ts: Date.now() }), 'PX', 600_000);
    });
    try {
      const [s1, s2, s3] = [await openOn(p.fast), await openOn(p.fast), await openOn(p.framework)];
      expect((await ask(p.fast.url, s1, 'one')).status).toBe(202);
      expect((await ask(p.fast.url, s2, 'two')).status).toBe(202);
      const stranger = `/chat/sessions/${randomUUID()}/messages`;
      const json = { 'Content-Type': 'application/json', Authorization: `Bearer ${'x'.repeat(43)}` };
      // The proof lasts at most 1 s after a refusal by the gate: each instance gets one, then both are
      // asked at once; on a machine too slow for that, again.
      // A stranger's question is refused 503 only on that proof (looked up, it would be 404).
      const answers = await waitFor('both refuse a stranger on the proof of their own refusal', async () => {
        await Promise.all([ask(p.fast.url, s3, 'three'), ask(p.framework.url, s3, 'three')]);
        const a = await Promise.all([
          send(`${p.fast.url}${stranger}`, { method: 'POST', headers: json, body: '{"question":"who am I?"}' }),
          send(`${p.framework.url}${stranger}`, { method: 'POST', headers: json, body: '{"question":"who am I?"}' }),
        ]);
        return a[0].status === 503 && a[1].status === 503 ? a : null;
      });
      for (const a of answers) expect(JSON.parse(a.body)).toMatchObject({ code: 'ai_overloaded', detail: 'Estimated wait 2.0 s is over the 1.0 s limit.', instance: stranger });
      expect(answers[0].status).toBe(503);
      const rest = (a: Answer) => Object.fromEntries(Object.entries(a.headers).filter(([k]) => !OWN.has(k) && k !== 'x-request-id'));
      expect(rest(answers[0])).toEqual(rest(answers[1]));
      expect(answers[0].body).toBe(answers[1].body);

      // Under the proof or not, a body that does not parse is answered alike (the parser runs first).
      const bad = await same(p, stranger, { method: 'POST', headers: json, body: '{"question":' });
      expect(JSON.parse(bad.body)).toMatchObject({ code: 'bad_json' });
      await same(p, stranger, { method: 'POST', headers: json, body: JSON.stringify({ question: 'x', more: 1 }) });
    } finally {
      await close(p);
    }
  });
});
