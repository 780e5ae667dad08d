import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { SseClient, ask, startTestRedis, waitFor, type ChatSession, type RedisHandle } from '@traffic-dam/stack';
import { startInstance as start, type TestInstance as Instance } from '../testing/instance';
import { WorkerDouble } from '../testing/worker-double';

// A dropped stream's session waits SSE_RESUME_MS for its client (resume/): short here.
const startInstance = (redisUrl: string, name: string) => start(redisUrl, name, { SSE_PING_MS: '200', QUESTION_MAX_CHARS: '50', SSE_RESUME_MS: '500' });

async function post(url: string, init: { body?: string | Buffer; headers?: Record<string, string>; method?: string }) {
  const res = await fetch(url, { method: init.method ?? 'POST', body: init.body, headers: init.headers });
  const text = await res.text();
  return { status: res.status, headers: res.headers, body: text ? (JSON.parse(text) as Record<string, unknown>) : {} };
}

describe('chat sessions across two instances (real Redis)', () => {
  let redis: RedisHandle;
  let a: Instance;
  let b: Instance;
  let worker: WorkerDouble;
  let probe: Redis;
  const streams: SseClient[] = [];

  async function open(on: Instance): Promise<{ sse: SseClient; s: ChatSession }> {
    const sse = await new SseClient(`${on.url}/chat/stream`).open();
    streams.push(sse);
    return { sse, s: await sse.session() };
  }

  beforeAll(async () => {
    redis = await startTestRedis(mkdtempSync(join(tmpdir(), 'td-int-')));
    worker = new WorkerDouble(redis.url);
    await worker.start();
    [a, b] = await Promise.all([startInstance(redis.url, 'a'), startInstance(redis.url, 'b')]);
    probe = new Redis(redis.url);
  });

  afterAll(async () => {
    for (const s of streams) s.close();
    await worker?.stop();
    probe?.disconnect();
    await Promise.all([a?.app.close(), b?.app.close()]);
    await redis?.stop();
  });

  it('opens a session with a strong token and pings the stream', async () => {
    const { sse, s } = await open(a);
    expect(sse.status).toBe(200);
    expect(sse.headers.get('content-type')).toContain('text/event-stream');
    expect(s.sessionId).toMatch(/^[0-9a-f-]{36}$/);
    expect(Buffer.from(s.token, 'base64url').length).toBeGreaterThanOrEqual(16);
    expect(s.instanceId).toBe(a.id);
    expect(s.expiresAt).toBeGreaterThan(Date.now());
    await waitFor('a ping on the stream', () => sse.pings >= 1);
    // Only the hash is stored: a Redis dump does not hand out sessions.
    const stored = await probe.hgetall(`td:session:{${s.sessionId}}`);
    expect(stored['instanceId']).toBe(a.id);
    expect(JSON.stringify(stored)).not.toContain(s.token);
  });

  it('relays the answer to the stream on A when the POST lands on B, then accepts the next question', async () => {
    const { sse, s } = await open(a);
    const first = await ask(b.url, s, 'hello there');
    expect(first.status).toBe(202);
    const { messageId } = first.body as { messageId: string };
    const done = await sse.waitFor((e) => e.event === 'done' && (e.data as { messageId: string }).messageId === messageId);
    const tokens = sse.events.filter((e) => e.event === 'token' && (e.data as { messageId: string }).messageId === messageId);
    expect(tokens.map((t) => (t.data as { seq: number }).seq)).toEqual([0, 1, 2]);
    expect((done.data as { tokens: number }).tokens).toBe(3);
    expect(worker.received.find((q) => q['id'] === messageId)?.['replyTo']).toBe(`td:replies:${a.id}`);
    // The in-flight slot was released by the done event.
    const second = await ask(a.url, s, 'and again');
    expect(second.status).toBe(202);
    await sse.waitFor((e) => e.event === 'done' && (e.data as { messageId: string }).messageId === (second.body as { messageId: string }).messageId);
  });

  it('answers 409 while a question is in flight', async () => {
    const { s } = await open(a);
    worker.holdNext = true;
    const first = await ask(a.url, s, 'slow one');
    expect(first.status).toBe(202);
    const second = await ask(b.url, s, 'too soon');
    expect(second.status).toBe(409);
    expect((second.body as { code: string }).code).toBe('question_in_flight');
    worker.release();
  });

  it('refuses bad input with the contract status and a problem body', async () => {
    const { s } = await open(a);
    const url = `${b.url}/chat/sessions/${s.sessionId}/messages`;
    const auth = { Authorization: `Bearer ${s.token}` };
    const json = { ...auth, 'Content-Type': 'application/json' };
    const cases: Array<[string, Promise<{ status: number; headers: Headers; body: Record<string, unknown> }>, number, string]> = [
      ['no token', post(url, { body: '{"question":"q"}', headers: { 'Content-Type': 'application/json' } }), 401, 'missing_token'],
      ['not bearer', post(url, { body: '{"question":"q"}', headers: { 'Content-Type': 'application/json', Authorization: 'Basic x' } }), 401, 'missing_token'],
      ['wrong token', post(url, { body: '{"question":"q"}', headers: { 'Content-Type': 'application/json', Authorization: 'Bearer wrong' } }), 403, 'invalid_token'],
      ['unknown session', post(`${b.url}/chat/sessions/00000000-0000-4000-8000-000000000000/messages`, { body: '{"question":"q"}', headers: json }), 404, 'session_not_found'],
      ['not a session id', post(`${b.url}/chat/sessions/..%2f..%2fetc/messages`, { body: '{"question":"q"}', headers: json }), 404, 'session_not_found'],
      ['text/plain', post(url, { body: 'question=q', headers: { ...auth, 'Content-Type': 'text/plain' } }), 415, 'unsupported_media_type'],
      ['no content type', post(url, { body: Buffer.from('{"question":"q"}'), headers: auth }), 415, 'unsupported_media_type'],
      ['broken JSON', post(url, { body: '{"question":', headers: json }), 400, 'bad_json'],
      ['garbage bytes', post(url, { body: Buffer.from([0xff, 0x00, 0xfe, 0x7b]), headers: json }), 400, 'bad_json'],
      ['a JSON string', post(url, { body: '"q"', headers: json }), 400, 'bad_json'],
      ['an array', post(url, { body: '["q"]', headers: json }), 400, 'bad_request'],
      ['missing question', post(url, { body: '{}', headers: json }), 400, 'bad_request'],
      ['empty question', post(url, { body: '{"question":""}', headers: json }), 400, 'bad_request'],
      ['question not a string', post(url, { body: '{"question":42}', headers: json }), 400, 'bad_request'],
      ['question over the limit', post(url, { body: JSON.stringify({ question: 'x'.repeat(51) }), headers: json }), 413, 'question_too_large'],
      ['body over 16 KB', post(url, { body: JSON.stringify({ question: 'x'.repeat(17_000) }), headers: json }), 413, 'body_too_large'],
    ];
    for (const [name, pending, status, code] of cases) {
      const res = await pending;
      expect({ name, status: res.status, code: res.body['code'] }).toEqual({ name, status, code });
      expect(res.headers.get('content-type')).toContain('application/problem+json');
      expect(res.body['status']).toBe(status);
    }
    // None of that consumed the session: a good question still goes through.
    expect((await ask(b.url, s, 'fine')).status).toBe(202);
    expect((await fetch(`${a.url}/health/live`)).status).toBe(200);
  });

  it('closes the stream on A with DELETE sent to B, and the session is gone for everyone', async () => {
    const { sse, s } = await open(a);
    const wrong = await post(`${b.url}/chat/sessions/${s.sessionId}`, { method: 'DELETE', headers: { Authorization: 'Bearer nope' } });
    expect(wrong.status).toBe(403);
    const del = await fetch(`${b.url}/chat/sessions/${s.sessionId}`, { method: 'DELETE', headers: { Authorization: `Bearer ${s.token}` } });
    expect(del.status).toBe(204);
    expect(await sse.ended(5_000)).toBe(true);
    expect((await ask(a.url, s, 'after close')).status).toBe(404);
    expect(await probe.exists(`td:session:{${s.sessionId}}`)).toBe(0);
  });

  it('cleans up when the client drops mid-answer and does not come back within SSE_RESUME_MS: session removed, question cancelled', async () => {
    const { sse, s } = await open(a);
    worker.holdNext = true;
    const r = await ask(a.url, s, 'drop me');
    const { messageId } = r.body as { messageId: string };
    sse.close();
    // First the session waits for its client (still in Redis, the question not cancelled)...
    await waitFor('session waiting', async () => /td_sse_sessions_waiting\{[^}]*\} 1/.test(await (await fetch(`${a.url}/metrics`)).text()));
    expect(await probe.exists(`td:session:{${s.sessionId}}`)).toBe(1);
    expect(await probe.exists(`td:cancel:${messageId}`)).toBe(0);
    // ...then its window ends.
    await waitFor('session removed', async () => (await probe.exists(`td:session:{${s.sessionId}}`)) === 0);
    await waitFor('question cancelled', async () => (await probe.exists(`td:cancel:${messageId}`)) === 1);
    worker.release();
    const metrics = await (await fetch(`${a.url}/metrics`)).text();
    expect(metrics).toMatch(/td_sse_sessions_closed_total\{reason="client"[^}]*\} [1-9]/);
  });

  it('exposes health, readiness and metrics', async () => {
    const ready = await fetch(`${b.url}/health/ready`);
    expect(ready.status).toBe(200);
    expect(((await ready.json()) as { redis: boolean }).redis).toBe(true);
    const metrics = await (await fetch(`${b.url}/metrics`)).text();
    expect(metrics).toContain('td_process_cpu_user_seconds_total');
    expect(metrics).toMatch(/td_http_requests_total\{method="POST",route="\/chat\/sessions\/:id\/messages",status="202"/);
    const unknown = await fetch(`${b.url}/nope`);
    expect(unknown.status).toBe(404);
    expect(((await unknown.json()) as { code: string }).code).toBe('not_found');
  });

  it('refuses a question with 503 ai_unavailable at once when no worker is alive', async () => {
    const { s } = await open(a);
    await worker.stop();
    await probe.del('td:workers:double');
    // The instances read worker heartbeats every 500 ms: wait until both saw none.
    const liveWorkers = async (i: Instance): Promise<string | undefined> =>
      /^td_ai_live_workers\{[^}]*\} (\d+)$/m.exec(await (await fetch(`${i.url}/metrics`)).text())?.[1];
    await waitFor('no live worker, as both instances see it', async () => (await liveWorkers(a)) === '0' && (await liveWorkers(b)) === '0');
    const first = await ask(a.url, s, 'anyone?');
    expect((first.body as { code: string }).code).toBe('ai_unavailable');
    const r = await ask(b.url, s, 'anyone?');
    expect(r.status).toBe(503);
    expect(Number(r.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    // The in-flight slot was given back: the session is not stuck at 409.
    expect(((await ask(a.url, s, 'still?')).body as { code: string }).code).toBe('ai_unavailable');
  });
});
