import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import jwt from 'jsonwebtoken';
import { Redis } from 'ioredis';
import { SocketChatClient, SseClient, ask, startTestRedis, waitFor, type RedisHandle, type SseEvent } from '@traffic-dam/stack';
import { LifecycleService } from '../common/lifecycle.service';
import { startInstance, type TestInstance } from '../testing/instance';
import { WorkerDouble } from '../testing/worker-double';

const messageIdOf = (e: SseEvent): string | undefined => (e.data as { messageId?: string }).messageId;
const held = async (i: TestInstance): Promise<number> => ((await (await fetch(`${i.url}/dam`)).json()) as { held: number }).held;

describe('Socket.IO /chat over the session core, two instances (real Redis)', () => {
  let redis: RedisHandle;
  let worker: WorkerDouble;
  let a: TestInstance;
  let b: TestInstance;
  let probe: Redis;
  const clients: Array<{ close(): void }> = [];

  async function connect(on: TestInstance, opts: { jwt?: string } = {}): Promise<SocketChatClient> {
    const c = await new SocketChatClient(on.url, opts).connect();
    clients.push(c);
    return c;
  }

  beforeAll(async () => {
    redis = await startTestRedis(mkdtempSync(join(tmpdir(), 'td-socketio-')));
    worker = new WorkerDouble(redis.url);
    await worker.start();
    // SSE streams closed here keep their slot for the resume window: short, so each test starts empty.
    const env = { DAM_SLOTS_PER_INSTANCE: '4', QUESTION_MAX_CHARS: '50', SSE_RESUME_MS: '200' };
    [a, b] = await Promise.all([startInstance(redis.url, 'sio-a', env), startInstance(redis.url, 'sio-b', env)]);
    probe = new Redis(redis.url);
  });

  afterEach(async () => {
    for (const c of clients.splice(0)) c.close();
    await waitFor('both instances hold no session', async () => (await held(a)) === 0 && (await held(b)) === 0);
  });

  afterAll(async () => {
    await worker?.stop();
    await Promise.all([a?.app.close(), b?.app.close()]);
    probe?.disconnect();
    await redis?.stop();
  });

  it('connect is a session: the session event, an ask acknowledged with its messageId, the answer in order on the socket', async () => {
    const c = await connect(a);
    expect(c.connected).toBe(true);
    const s = await c.session();
    expect(s).toMatchObject({ instanceId: a.id, sessionId: expect.stringMatching(/^[0-9a-f-]{36}$/) as unknown });
    expect(await probe.hget(`td:session:{${s.sessionId}}`, 'transport')).toBe('socketio');
    const ack = await c.ask({ question: 'hello over a socket' });
    expect(ack).toEqual({ messageId: expect.any(String) as unknown });
    const { messageId } = ack as { messageId: string };
    await c.waitFor((e) => e.event === 'done' && messageIdOf(e) === messageId);
    const answer = c.events.filter((e) => e.event !== 'session');
    expect(answer.map((e) => e.event)).toEqual(['token', 'token', 'token', 'done']);
    expect(answer.map((e) => e.data)).toEqual([
      { messageId, seq: 0, text: 't0 ' },
      { messageId, seq: 1, text: 't1 ' },
      { messageId, seq: 2, text: 't2 ' },
      { messageId, tokens: 3 },
    ]);
    // The next question on the same socket goes through: the in-flight slot was released.
    const again = await c.ask({ question: 'and again' });
    await c.waitFor((e) => e.event === 'done' && messageIdOf(e) === (again as { messageId: string }).messageId);
  });

  it('refuses a bad ask with the problem codes of HTTP, through the acknowledgement', async () => {
    const c = await connect(a);
    await c.session();
    expect(await c.ask('not an object')).toMatchObject({ code: 'bad_request', status: 400 });
    expect(await c.ask({ question: 'x'.repeat(51) })).toMatchObject({ code: 'question_too_large', status: 413 });
    expect(await c.ask({ question: 'q', extra: 1 })).toMatchObject({ code: 'bad_request' });
    worker.holdNext = true;
    const first = await c.ask({ question: 'a slow one' });
    expect(first).toHaveProperty('messageId');
    expect(await c.ask({ question: 'too soon' })).toMatchObject({ code: 'question_in_flight', status: 409 });
    worker.release();
  });

  it('an answer whose question was posted over HTTP on the other instance reaches the socket', async () => {
    const c = await connect(a);
    const s = await c.session();
    const r = await ask(b.url, s, 'asked elsewhere');
    expect(r.status).toBe(202);
    const { messageId } = r.body as { messageId: string };
    const done = await c.waitFor((e) => e.event === 'done' && messageIdOf(e) === messageId);
    expect(done.data).toEqual({ messageId, tokens: 3 });
  });

  it('DELETE on the other instance disconnects the socket through the Redis adapter', async () => {
    const c = await connect(a);
    const s = await c.session();
    const del = await fetch(`${b.url}/chat/sessions/${s.sessionId}`, { method: 'DELETE', headers: { Authorization: `Bearer ${s.token}` } });
    expect(del.status).toBe(204);
    expect(await c.ended(5_000)).toBe(true);
    expect(c.disconnectReason).toBe('io server disconnect');
    expect(await probe.exists(`td:session:{${s.sessionId}}`)).toBe(0);
    const metrics = await (await fetch(`${a.url}/metrics`)).text();
    expect(metrics).toMatch(/td_sessions_closed_total\{transport="socketio",reason="deleted"[^}]*\} [1-9]/);
  });

  it('shares one budget with SSE: the slot after the last is refused on either transport, with a retry time', async () => {
    const sse = await Promise.all([0, 1].map(() => new SseClient(`${a.url}/chat/stream`).open()));
    clients.push(...sse);
    expect(sse.map((s) => s.status)).toEqual([200, 200]);
    await connect(a);
    await connect(a);
    expect(await held(a)).toBe(4);
    const refused = await connect(a);
    expect(refused.connected).toBe(false);
    expect(refused.refusal).toMatchObject({ code: 'dam_full', status: 429, retryAfterMs: expect.any(Number) as unknown });
    expect(refused.refusal?.retryAfterMs).toBeGreaterThanOrEqual(1_000);
    const sseRefused = await new SseClient(`${a.url}/chat/stream`).open();
    expect(sseRefused.status).toBe(429);
    expect(await held(a)).toBe(4);
  });

  it('a disconnect releases the slot once and cancels the question in flight', async () => {
    const c = await connect(a);
    await c.session();
    expect(await held(a)).toBe(1);
    worker.holdNext = true;
    const ack = (await c.ask({ question: 'drop me' })) as { messageId: string };
    await waitFor('the worker got the question', async () => worker.received.some((q) => q['id'] === ack.messageId));
    c.close();
    await waitFor('the question cancelled', async () => (await probe.exists(`td:cancel:${ack.messageId}`)) === 1);
    await waitFor('the slot released', async () => (await held(a)) === 0);
    worker.release();
    // Exactly once: four more sockets fit in the budget of four.
    const more = await Promise.all([0, 1, 2, 3].map(() => connect(a)));
    expect(more.map((m) => m.connected)).toEqual([true, true, true, true]);
  });

  it('ends with expired on the idle TTL and refuses connects while draining', async () => {
    const c = await startInstance(redis.url, 'sio-c', { DAM_SESSION_IDLE_MS: '300', DRAIN_GRACE_MS: '100' });
    try {
      const idle = await new SocketChatClient(c.url).connect();
      clients.push(idle);
      await idle.session();
      expect((await idle.waitFor((e) => e.event === 'expired', 5_000)).data).toEqual({ reason: 'idle' });
      expect(await idle.ended(2_000)).toBe(true);
      const open = await new SocketChatClient(c.url).connect();
      clients.push(open);
      await open.session();
      const drained = c.app.get(LifecycleService).drain('graceful');
      const late = await new SocketChatClient(c.url).connect();
      expect(late.refusal).toMatchObject({ code: 'draining', status: 503, retryAfterMs: 1_000 });
      expect((await open.waitFor((e) => e.event === 'expired', 5_000)).data).toEqual({ reason: 'draining' });
      await drained;
      expect(await held(c)).toBe(0);
    } finally {
      await c.app.close();
    }
  });

  it('takes the JWT from auth.token when one is required', async () => {
    const secret = 's'.repeat(40);
    const c = await startInstance(redis.url, 'sio-jwt', { AUTH_JWT_SECRET: secret, DAM_USER_MAX_SESSIONS: '1' });
    try {
      const anonymous = await new SocketChatClient(c.url).connect();
      expect(anonymous.refusal).toMatchObject({ code: 'missing_token', status: 401 });
      const forged = await new SocketChatClient(c.url, { jwt: jwt.sign({ sub: 'eve' }, 'x'.repeat(40)) }).connect();
      expect(forged.refusal).toMatchObject({ code: 'invalid_credentials' });
      const token = jwt.sign({ sub: 'alice' }, secret, { algorithm: 'HS256', expiresIn: 60 });
      const alice = await new SocketChatClient(c.url, { jwt: token }).connect();
      clients.push(alice);
      expect(alice.connected).toBe(true);
      // Per-user limits key on the verified sub, across transports.
      const second = await new SseClient(`${c.url}/chat/stream`, { headers: { Authorization: `Bearer ${token}` } }).open();
      expect(second.status).toBe(429);
      expect(second.refusal).toMatchObject({ code: 'user_session_limit' });
    } finally {
      await c.app.close();
    }
  });
});
