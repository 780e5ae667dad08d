import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { SseClient, ask, startTestRedis, type ChatSession, type RedisHandle, type SseEvent, waitFor } from '@traffic-dam/stack';
import { startInstance, type TestInstance } from '../testing/instance';
import { SteppedWorker } from '../testing/stepped-worker';

interface DamView {
  held: number;
  global: { used: number } | null;
}
const dam = async (i: TestInstance): Promise<DamView> => (await (await fetch(`${i.url}/dam`)).json()) as DamView;
/** A series' value: `name` or `name{label="v"}` (the labels given must all be on the line). */
async function metric(i: TestInstance, series: string): Promise<number> {
  const [name, labels = ''] = series.replace('}', '').split('{');
  const wanted = labels ? labels.split(',') : [];
  const line = (await (await fetch(`${i.url}/metrics`)).text())
    .split('\n')
    .find((l) => (l.startsWith(`${name} `) || l.startsWith(`${name}{`)) && wanted.every((w) => l.includes(w)));
  return line ? Number(line.slice(line.lastIndexOf(' ') + 1)) : NaN;
}

const seqsOf = (events: SseEvent[], messageId: string) =>
  events.filter((e) => e.event === 'token' && (e.data as { messageId: string }).messageId === messageId).map((e) => (e.data as { seq: number }).seq);
const idNumber = (id: string | undefined) => Number(id?.split('.')[1]);

describe('resuming a dropped SSE stream by Last-Event-ID (real Redis, two instances)', () => {
  let redis: RedisHandle;
  let a: TestInstance;
  let b: TestInstance;
  let worker: SteppedWorker;
  let probe: Redis;
  let questions = 0;
  const streams: SseClient[] = [];

  const open = async (on: TestInstance, lastEventId?: string): Promise<SseClient> => {
    const sse = await new SseClient(`${on.url}/chat/stream`, { headers: lastEventId ? { 'Last-Event-ID': lastEventId } : {} }).open();
    streams.push(sse);
    return sse;
  };
  /** Asks on the session; the worker's handle of that question. */
  const askOn = async (on: TestInstance, s: ChatSession) => {
    const r = await ask(on.url, s, 'tell me more');
    expect(r.status).toBe(202);
    return { messageId: (r.body as { messageId: string }).messageId, answer: await worker.question(questions++) };
  };
  const globalUsed = async () => (await dam(a)).global?.used;

  beforeAll(async () => {
    redis = await startTestRedis(mkdtempSync(join(tmpdir(), 'td-resume-')));
    worker = new SteppedWorker(redis.url);
    await worker.start();
    const env = { SSE_PING_MS: '200', SSE_RESUME_MS: '2000', DAM_HEARTBEAT_MS: '200', DAM_HEARTBEAT_TTL_MS: '1000' };
    [a, b] = await Promise.all([startInstance(redis.url, 'resume-a', env), startInstance(redis.url, 'resume-b', env)]);
    probe = new Redis(redis.url);
  });

  afterAll(async () => {
    for (const s of streams) s.close();
    await worker?.stop();
    probe?.disconnect();
    await Promise.all([a?.app.close(), b?.app.close()]);
    await redis?.stop();
  });

  afterEach(async () => {
    for (const s of streams.splice(0)) s.close();
    // Every test leaves the budget empty: its sessions end by DELETE or their window.
    await waitFor('budget empty', async () => (await globalUsed()) === 0 && (await dam(a)).held === 0 && (await dam(b)).held === 0, 8_000);
  });

  it('gives every event an id `<handle>.<n>` (n from 1, one handle per session) and asks EventSource to reconnect after 1 s', async () => {
    const sse = await open(a);
    const s = await sse.session();
    const { messageId, answer } = await askOn(a, s);
    for (let i = 0; i < 3; i++) await answer.token();
    await answer.done();
    await sse.waitFor((e) => e.event === 'done');
    const ids = sse.events.map((e) => e.id ?? '');
    const handles = new Set(ids.map((id) => id.split('.')[0]));
    expect(handles.size).toBe(1);
    expect([...handles][0]).toMatch(/^[A-Za-z0-9_-]{22}$/);
    expect(ids.map(idNumber)).toEqual([1, 2, 3, 4, 5]);
    expect(sse.retry).toBe(1_000);
    expect(seqsOf(sse.events, messageId)).toEqual([0, 1, 2]);
    // Redis has the handle's hash only.
    const keys = await probe.keys('td:resume:*');
    for (const k of keys) expect(k).not.toContain([...handles][0]);
    expect(await probe.hget(`td:session:{${s.sessionId}}`, 'instanceId')).toBe(a.id);
    await fetch(`${a.url}/chat/sessions/${s.sessionId}`, { method: 'DELETE', headers: { Authorization: `Bearer ${s.token}` } });
  });

  it('on the same instance: the same session, the tokens sent while it was away and the rest, each once, with no new slot', async () => {
    const first = await open(a);
    const s = await first.session();
    expect(await globalUsed()).toBe(1);
    const { messageId, answer } = await askOn(a, s);
    await answer.token();
    await answer.token();
    await first.waitFor((e) => e.event === 'token' && (e.data as { seq: number }).seq === 1);
    const last = first.lastEventId;
    first.close();
    // The server saw the drop: the session waits for its client, still on its slot, and the answer goes on.
    await waitFor('session waiting', async () => (await metric(a, 'td_sse_sessions_waiting')) === 1);
    for (let i = 0; i < 3; i++) expect(await answer.token()).toBe(true);
    expect(await globalUsed()).toBe(1);

    const again = await open(a, last);
    expect(again.status).toBe(200);
    await again.waitFor((e) => e.event === 'token' && (e.data as { seq: number }).seq === 4);
    await answer.token();
    await answer.done();
    await again.waitFor((e) => e.event === 'done');
    const all = [...first.events, ...again.events];
    expect(seqsOf(all, messageId)).toEqual([0, 1, 2, 3, 4, 5]);
    // The resumed stream starts right after the last id the client had, with no session event of its own.
    expect(again.events.map((e) => idNumber(e.id))).toEqual([idNumber(last) + 1, idNumber(last) + 2, idNumber(last) + 3, idNumber(last) + 4, idNumber(last) + 5]);
    expect(await metric(a, 'td_sse_sessions_waiting')).toBe(0);
    expect(await globalUsed()).toBe(1);
    // Still the same session: it takes the next question.
    const next = await askOn(b, s);
    await next.answer.token();
    await next.answer.done();
    await again.waitFor((e) => e.event === 'done' && (e.data as { messageId: string }).messageId === next.messageId);
    await fetch(`${a.url}/chat/sessions/${s.sessionId}`, { method: 'DELETE', headers: { Authorization: `Bearer ${s.token}` } });
  });

  it('supersedes a connection the server has not seen drop: the old stream ends, the new one goes on', async () => {
    const first = await open(a);
    const s = await first.session();
    const { messageId, answer } = await askOn(a, s);
    await answer.token();
    await first.waitFor((e) => e.event === 'token');
    const again = await open(a, first.lastEventId);
    expect(again.status).toBe(200);
    expect(await first.ended(5_000)).toBe(true);
    await answer.token();
    await answer.done();
    await again.waitFor((e) => e.event === 'done');
    expect(seqsOf([...first.events, ...again.events], messageId)).toEqual([0, 1]);
    expect(await globalUsed()).toBe(1);
    await fetch(`${a.url}/chat/sessions/${s.sessionId}`, { method: 'DELETE', headers: { Authorization: `Bearer ${s.token}` } });
  });

  it('on another instance: that one relays the session, which stays on its own instance and slot; the count stays exact', async () => {
    const first = await open(a);
    const s = await first.session();
    const { messageId, answer } = await askOn(a, s);
    await answer.token();
    await first.waitFor((e) => e.event === 'token');
    const last = first.lastEventId;
    first.close();
    await waitFor('session waiting', async () => (await metric(a, 'td_sse_sessions_waiting')) === 1);
    await answer.token();

    const onB = await open(b, last);
    expect(onB.status).toBe(200);
    expect(onB.headers.get('x-instance-id')).toBe(b.id);
    await onB.waitFor((e) => e.event === 'token' && (e.data as { seq: number }).seq === 1);
    await answer.token();
    await answer.done();
    await onB.waitFor((e) => e.event === 'done');
    expect(seqsOf([...first.events, ...onB.events], messageId)).toEqual([0, 1, 2]);
    expect(await metric(a, 'td_sse_sessions_waiting')).toBe(0);
    expect([(await dam(a)).held, (await dam(b)).held, await globalUsed()]).toEqual([1, 0, 1]);
    // Questions go on through either instance; the answers come to the client on b.
    const next = await askOn(b, s);
    await next.answer.token();
    await next.answer.done();
    const done = await onB.waitFor((e) => e.event === 'done' && (e.data as { messageId: string }).messageId === next.messageId);
    expect(idNumber(done.id)).toBe(idNumber(onB.lastEventId));
    // Its client leaves b for good: the session on a waits, then its window ends and the slot returns.
    onB.close();
    await waitFor('waiting on a again', async () => (await metric(a, 'td_sse_sessions_waiting')) === 1);
    await waitFor('slot back', async () => (await dam(a)).held === 0 && (await globalUsed()) === 0, 5_000);
  });

  it('when no client comes back within SSE_RESUME_MS: the answer goes on in the window, then stops within one token and the slot returns', async () => {
    const sse = await open(a);
    const s = await sse.session();
    const { answer } = await askOn(a, s);
    await answer.token();
    await sse.waitFor((e) => e.event === 'token');
    sse.close();
    await waitFor('session waiting', async () => (await metric(a, 'td_sse_sessions_waiting')) === 1);
    expect(await answer.token()).toBe(true);
    expect((await dam(a)).held).toBe(1);
    await waitFor('window over', async () => (await dam(a)).held === 0, 5_000);
    let more = 0;
    while (await answer.token()) more++;
    expect(more).toBeLessThanOrEqual(1);
    expect(await probe.exists(`td:session:{${s.sessionId}}`)).toBe(0);
  });

  it('answers 204 to a reconnect after DELETE, on every instance, and to an id it never issued', async () => {
    const sse = await open(a);
    const s = await sse.session();
    const last = sse.lastEventId;
    const del = await fetch(`${b.url}/chat/sessions/${s.sessionId}`, { method: 'DELETE', headers: { Authorization: `Bearer ${s.token}` } });
    expect(del.status).toBe(204);
    expect(await sse.ended(5_000)).toBe(true);
    await waitFor('tombstone', async () => (await probe.keys('td:resume:*')).length > 0 && (await Promise.all((await probe.keys('td:resume:*')).map((k) => probe.hget(k, 'ended')))).includes('deleted'));
    for (const on of [a, b]) {
      const r = await fetch(`${on.url}/chat/stream`, { headers: { 'Last-Event-ID': last ?? '' } });
      expect(r.status).toBe(204);
    }
    const unknown = await fetch(`${a.url}/chat/stream`, { headers: { 'Last-Event-ID': `${'A'.repeat(22)}.3` } });
    expect(unknown.status).toBe(204);
  });
});

describe('how a stream ends for a client that comes back (real Redis)', () => {
  let redis: RedisHandle;
  let idle: TestInstance;
  let small: TestInstance;
  let other: TestInstance;
  let worker: SteppedWorker;
  const streams: SseClient[] = [];

  const open = async (on: TestInstance, lastEventId?: string): Promise<SseClient> => {
    const sse = await new SseClient(`${on.url}/chat/stream`, { headers: lastEventId ? { 'Last-Event-ID': lastEventId } : {} }).open();
    streams.push(sse);
    return sse;
  };

  beforeAll(async () => {
    redis = await startTestRedis(mkdtempSync(join(tmpdir(), 'td-resume-end-')));
    worker = new SteppedWorker(redis.url);
    await worker.start();
    [idle, small, other] = await Promise.all([
      startInstance(redis.url, 'end-idle', { DAM_SESSION_IDLE_MS: '300' }),
      startInstance(redis.url, 'end-small', { SSE_RESUME_EVENTS: '16' }),
      startInstance(redis.url, 'end-other'),
    ]);
  });

  afterAll(async () => {
    for (const s of streams) s.close();
    await worker?.stop();
    await Promise.all([idle, small, other].map((i) => i?.app.close()));
    await redis?.stop();
  });

  it('after `expired` (idle): retry: 2 s, and the reconnect with its id is 204 on every instance (EventSource stops)', async () => {
    const sse = await open(idle);
    await sse.session();
    const expired = await sse.waitFor((e) => e.event === 'expired', 5_000);
    expect(expired.data).toEqual({ reason: 'idle' });
    expect(sse.retry).toBe(2_000);
    expect(await sse.ended(5_000)).toBe(true);
    for (const on of [idle, other]) {
      const r = await fetch(`${on.url}/chat/stream`, { headers: { 'Last-Event-ID': expired.id ?? '' } });
      expect([on.id, r.status]).toEqual([on.id, 204]);
    }
  });

  it('after `expired` (draining): a short retry, and the reconnect gets a new session on another instance', async () => {
    const draining = await startInstance(redis.url, 'end-draining');
    const sse = await open(draining);
    const old = await sse.session();
    const closing = draining.app.close();
    const expired = await sse.waitFor((e) => e.event === 'expired', 5_000);
    expect(expired.data).toEqual({ reason: 'draining' });
    expect(sse.retry).toBeGreaterThanOrEqual(250);
    expect(sse.retry).toBeLessThanOrEqual(1_000);
    await closing;
    const again = await open(other, expired.id);
    expect(again.status).toBe(200);
    const fresh = await again.session();
    expect(fresh.sessionId).not.toBe(old.sessionId);
    expect(fresh.instanceId).toBe(other.id);
  });

  it('answers 204 when the events a reconnect missed are no longer all kept (SSE_RESUME_EVENTS)', async () => {
    const sse = await open(small);
    const s = await sse.session();
    const r = await ask(small.url, s, 'a long one');
    expect(r.status).toBe(202);
    const answer = await worker.question(0);
    await answer.token();
    await sse.waitFor((e) => e.event === 'token');
    const last = sse.lastEventId;
    sse.close();
    for (let i = 0; i < 20; i++) await answer.token();
    // All 21 tokens passed the gateway (into the session's ring of 16 events).
    await waitFor('tokens relayed', async () => (await metric(small, 'td_replies_total{type="token"}')) === 21);
    const res = await fetch(`${small.url}/chat/stream`, { headers: { 'Last-Event-ID': last ?? '' }, signal: AbortSignal.timeout(2_000) });
    expect(res.status).toBe(204);
    await answer.done();
  });
});
