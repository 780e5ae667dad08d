import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { SocketChatClient, SseClient, ask, startTestRedis, waitFor, type RedisHandle, type SseEvent } from '@traffic-dam/stack';
import { startInstance, type TestInstance } from '../testing/instance';

interface DamView {
  held: number;
  line: { length: number; waitingHere: number; maxWaiters: number };
}
const damOf = async (i: TestInstance): Promise<DamView> => (await (await fetch(`${i.url}/dam`)).json()) as DamView;
const queuedEvents = (c: { events: SseEvent[] }) => c.events.filter((e) => e.event === 'queued').map((e) => e.data as { position: number; etaMs: number | null; messageId?: string });

describe('opt-in waiting for a slot, two instances (real Redis)', () => {
  let redis: RedisHandle;
  let a: TestInstance;
  let b: TestInstance;
  const open: Array<{ close(): void }> = [];

  async function stream(on: TestInstance, opts: { query?: string; prefer?: string } = {}): Promise<SseClient> {
    const c = new SseClient(`${on.url}/chat/stream${opts.query ?? ''}`, { headers: opts.prefer ? { Prefer: opts.prefer } : {} });
    open.push(c);
    return c.open();
  }

  beforeAll(async () => {
    redis = await startTestRedis(mkdtempSync(join(tmpdir(), 'td-waiting-')));
    const env = { DAM_SLOTS_PER_INSTANCE: '1', DAM_HEARTBEAT_MS: '200', DAM_HEARTBEAT_TTL_MS: '1000' };
    [a, b] = await Promise.all([startInstance(redis.url, 'wait-a', env), startInstance(redis.url, 'wait-b', env)]);
  });

  afterEach(async () => {
    await Promise.all(open.splice(0).map((c) => ('end' in c ? (c as SseClient).end() : c.close())));
    await waitFor('condition', async () => {
      const [x, y] = await Promise.all([damOf(a), damOf(b)]);
      return x.held + y.held === 0 && x.line.length === 0;
    });
  });

  afterAll(async () => {
    await Promise.all([a?.app.close(), b?.app.close()]);
    await redis?.stop();
  });

  it('a full budget opens a waiting stream at once with queued {position, etaMs}; it gets its session when a slot frees, on either instance, in arrival order', async () => {
    const holders = [await stream(a), await stream(b)];
    await Promise.all(holders.map((h) => h.session()));
    // Without the option, today's 429.
    expect((await stream(a)).status).toBe(429);
    const w1 = await stream(a, { query: '?wait=30' });
    expect(w1.status).toBe(200);
    expect((await w1.waitFor((e) => e.event === 'queued')).data).toEqual({ position: 1, etaMs: null });
    const w2 = await stream(b, { prefer: 'wait=30' });
    expect((await w2.waitFor((e) => e.event === 'queued')).data).toMatchObject({ position: 2 });
    expect((await damOf(a)).line.length).toBe(2);
    // The session on b ends: its slot goes to the head of the line, which waits on a.
    await holders[1]?.end();
    const s1 = await w1.session();
    expect(s1.instanceId).toBe(a.id);
    // w2 moves up (told on the next heartbeat), then gets the next slot.
    await w2.waitFor((e) => e.event === 'queued' && (e.data as { position: number }).position === 1, 5_000);
    await holders[0]?.end();
    const s2 = await w2.session();
    expect(s2.instanceId).toBe(b.id);
    // A session that waited is a session like any other.
    const r = await ask(a.url, s1, 'hello?');
    expect([202, 503]).toContain(r.status);
  });

  it('a waiter that disconnects frees its place at once; the one behind it moves up', async () => {
    const holders = [await stream(a), await stream(b)];
    await Promise.all(holders.map((h) => h.session()));
    const w1 = await stream(a, { query: '?wait=30' });
    await w1.waitFor((e) => e.event === 'queued');
    const w2 = await stream(b, { query: '?wait=30' });
    await w2.waitFor((e) => e.event === 'queued');
    w1.close();
    await waitFor('condition', async () => (await damOf(a)).line.length === 1);
    await w2.waitFor((e) => e.event === 'queued' && (e.data as { position: number }).position === 1, 5_000);
    await holders[0]?.end();
    expect((await w2.session()).instanceId).toBe(b.id);
  });

  it('a wait that runs out ends the stream with a readable refused event (dam_full, retryAfterMs)', async () => {
    const holders = [await stream(a), await stream(b)];
    await Promise.all(holders.map((h) => h.session()));
    const w = await stream(a, { query: '?wait=1' });
    await w.waitFor((e) => e.event === 'queued');
    const refused = await w.waitFor((e) => e.event === 'refused', 10_000);
    expect(refused.data).toMatchObject({ code: 'dam_full', status: 429 });
    expect((refused.data as { retryAfterMs: number }).retryAfterMs).toBeGreaterThan(0);
    expect(await w.ended(5_000)).toBe(true);
    expect((await damOf(a)).line.length).toBe(0);
  });

  it('Socket.IO: the handshake offers to wait (auth.wait); the socket connects, hears queued, then session', async () => {
    const holders = [await stream(a), await stream(b)];
    await Promise.all(holders.map((h) => h.session()));
    const refused = await new SocketChatClient(a.url).connect();
    open.push(refused);
    expect(refused.refusal).toMatchObject({ code: 'dam_full' });
    const s = await new SocketChatClient(b.url, { wait: 30 }).connect();
    open.push(s);
    expect(s.connected).toBe(true);
    expect((await s.waitFor((e) => e.event === 'queued')).data).toMatchObject({ position: 1 });
    await holders[0]?.end();
    const session = (await s.waitFor((e) => e.event === 'session')).data as { instanceId: string };
    expect(session.instanceId).toBe(b.id);
  });
});

describe('a question that waits behind others in the AI queue hears its place (real Redis)', () => {
  let redis: RedisHandle;
  let gw: TestInstance;
  let raw: Redis;
  const open: SseClient[] = [];

  beforeAll(async () => {
    redis = await startTestRedis(mkdtempSync(join(tmpdir(), 'td-queued-q-')));
    raw = new Redis(redis.url);
    // A live worker that reads nothing by itself: the test starts answers one by one.
    await raw.xgroup('CREATE', 'td:questions', 'workers', '$', 'MKSTREAM');
    await raw.set('td:workers:slow', JSON.stringify({ workerId: 'slow', capacityPerSec: 100, throughputPerSec: 0, inFlight: 0, answering: 0, ts: Date.now() }), 'PX', 600_000);
    // 20 ms of line at 100 answers/s: two questions ahead, for a question that does not wait.
    gw = await startInstance(redis.url, 'queued-q', { DAM_SLOTS_PER_INSTANCE: '10', DAM_MAX_QUEUE_WAIT_MS: '20' });
  });

  afterAll(async () => {
    for (const c of open) c.close();
    await gw?.app.close();
    raw?.disconnect();
    await redis?.stop();
  });

  it('queued {messageId, position, etaMs} after acceptance, moving up as answers start, before any token; the gate holds a question that waits to the longest wait offered, one that does not to its own limit', async () => {
    const clients = await Promise.all(Array.from({ length: 4 }, () => new SseClient(`${gw.url}/chat/stream`).open()));
    open.push(...clients);
    const sessions = await Promise.all(clients.map((c) => c.session()));
    const ids: string[] = [];
    for (const [i, s] of sessions.slice(0, 3).entries()) {
      const r = await ask(gw.url, s, `question ${i}`, 10_000, { Prefer: 'wait=20' });
      expect(r.status).toBe(202);
      ids.push((r.body as { messageId: string }).messageId);
    }
    // Three ahead is 30 ms: over the gate's 20 ms for a question that does not wait.
    const plain = await ask(gw.url, sessions[3] as { sessionId: string; token: string }, 'no wait');
    expect(plain.status).toBe(503);
    expect((plain.body as { code: string }).code).toBe('ai_overloaded');
    const patient = await ask(gw.url, sessions[3] as { sessionId: string; token: string }, 'I can wait', 10_000, { Prefer: 'wait=20' });
    expect(patient.status).toBe(202);
    ids.push((patient.body as { messageId: string }).messageId);
    expect((await clients[3]?.waitFor((e) => e.event === 'queued'))?.data).toMatchObject({ messageId: ids[3], position: 4 });
    // The first had nobody ahead; the second and third waited behind 1 and 2.
    const second = await clients[1]?.waitFor((e) => e.event === 'queued');
    expect(second?.data).toEqual({ messageId: ids[1], position: 2, etaMs: null });
    expect((await clients[2]?.waitFor((e) => e.event === 'queued'))?.data).toMatchObject({ messageId: ids[2], position: 3 });
    expect(queuedEvents(clients[0] as SseClient)).toEqual([]);
    // Two answers start (a worker takes them and is answering): the third moves up to 1.
    await raw.xreadgroup('GROUP', 'workers', 'w1', 'COUNT', 2, 'STREAMS', 'td:questions', '>');
    await raw.set('td:workers:slow', JSON.stringify({ workerId: 'slow', capacityPerSec: 100, throughputPerSec: 0, inFlight: 2, answering: 2, ts: Date.now() }), 'PX', 600_000);
    await clients[2]?.waitFor((e) => e.event === 'queued' && (e.data as { position: number }).position === 1, 5_000);
    await clients[3]?.waitFor((e) => e.event === 'queued' && (e.data as { position: number }).position === 2, 5_000);
    expect(clients.flatMap((c) => c.events.filter((e) => e.event === 'token'))).toEqual([]);
    // Its wait does not eat its answer's time: the deadline is QUESTION_DEADLINE_MS (30 s) past the 20 s it may wait.
    const entries = (await raw.xrange('td:questions', '-', '+')) as Array<[string, string[]]>;
    const fields = entries.map(([, f]) => Object.fromEntries(Array.from({ length: f.length / 2 }, (_, i) => [f[2 * i], f[2 * i + 1]])));
    const patientQ = fields.find((f) => f['id'] === ids[3]);
    expect(Number(patientQ?.['deadline']) - Date.now()).toBeGreaterThan(40_000);
  });
});
