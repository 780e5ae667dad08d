import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import jwt from 'jsonwebtoken';
import { SseClient, startTestRedis, type RedisHandle, waitFor } from '@traffic-dam/stack';
import { startInstance, type TestInstance } from '../testing/instance';

const SECRET = randomBytes(32).toString('hex');
const jwtOf = (sub: string, claims: Record<string, unknown> = {}) => jwt.sign({ sub, ...claims }, SECRET, { algorithm: 'HS256', expiresIn: '5m' });

async function ticketFor(url: string, authorization?: string): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(`${url}/chat/tickets`, { method: 'POST', headers: authorization ? { Authorization: authorization } : {} });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

describe('stream tickets: a JWT traded for a single-use credential an EventSource URL can carry (real Redis)', () => {
  let redis: RedisHandle;
  let gw: TestInstance;
  let shortLived: TestInstance;
  let open: TestInstance;
  let probe: Redis;
  const streams: SseClient[] = [];

  beforeAll(async () => {
    redis = await startTestRedis(mkdtempSync(join(tmpdir(), 'td-tickets-')));
    [gw, shortLived, open] = await Promise.all([
      startInstance(redis.url, 'tickets', { AUTH_JWT_SECRET: SECRET }),
      startInstance(redis.url, 'tickets-short', { AUTH_JWT_SECRET: SECRET, STREAM_TICKET_TTL_MS: '200' }),
      startInstance(redis.url, 'tickets-none'),
    ]);
    probe = new Redis(redis.url);
  });

  afterAll(async () => {
    for (const s of streams) s.close();
    probe?.disconnect();
    await Promise.all([gw, shortLived, open].map((i) => i?.app.close()));
    await redis?.stop();
  });

  const stream = async (url: string, headers?: Record<string, string>): Promise<SseClient> => {
    const sse = await new SseClient(url, { headers }).open();
    streams.push(sse);
    return sse;
  };

  it('issues a ticket for a valid JWT only, and stores nothing but its hash', async () => {
    expect((await ticketFor(gw.url)).body['code']).toBe('missing_token');
    const forged = jwt.sign({ sub: 'mallory' }, 'y'.repeat(40), { algorithm: 'HS256' });
    const bad = await ticketFor(gw.url, `Bearer ${forged}`);
    expect([bad.status, bad.body['code']]).toEqual([401, 'invalid_credentials']);

    const before = Date.now();
    const t = await ticketFor(gw.url, `Bearer ${jwtOf('alice')}`);
    expect(t.status).toBe(201);
    const ticket = t.body['ticket'] as string;
    expect(Buffer.from(ticket, 'base64url')).toHaveLength(32);
    expect(t.body['expiresAt']).toBeGreaterThanOrEqual(before + 30_000);
    const keys = await probe.keys('td:ticket:*');
    expect(keys.length).toBeGreaterThanOrEqual(1);
    for (const k of keys) {
      expect(k).not.toContain(ticket);
      expect(await probe.get(k)).not.toContain(ticket);
      expect(await probe.pttl(k)).toBeLessThanOrEqual(30_000);
    }
  });

  it('opens a stream with the identity of the JWT, once; a reused ticket is refused with invalid_ticket', async () => {
    const { ticket } = (await ticketFor(gw.url, `Bearer ${jwtOf('bob', { tier: 'gold' })}`)).body as { ticket: string };
    const url = `${gw.url}/chat/stream?ticket=${ticket}`;
    const sse = await stream(url);
    expect(sse.status).toBe(200);
    const s = await sse.session();
    // The session belongs to the JWT's user: per-user limits see it.
    expect(await probe.hget(`td:session:{${s.sessionId}}`, 'userId')).toBe('jwt:bob');

    const again = await stream(url);
    expect(again.status).toBe(401);
    expect(again.refusal).toMatchObject({ code: 'invalid_ticket', status: 401 });
    expect(again.headers.get('www-authenticate')).toBe('Bearer error="invalid_token"');
    // The problem's instance does not echo the ticket either.
    expect(JSON.stringify(again.refusal)).not.toContain(ticket);
    for (const junk of ['nope', 'x'.repeat(43)]) expect((await stream(`${gw.url}/chat/stream?ticket=${junk}`)).refusal).toMatchObject({ code: 'invalid_ticket' });
  });

  it('refuses a ticket past STREAM_TICKET_TTL_MS', async () => {
    const { ticket } = (await ticketFor(shortLived.url, `Bearer ${jwtOf('carol')}`)).body as { ticket: string };
    // Redis drops the key at its TTL; then the ticket is no more.
    const key = `td:ticket:${createHash('sha256').update(ticket).digest('base64url')}`;
    expect(await probe.exists(key)).toBe(1);
    await waitFor('ticket expired in Redis', async () => (await probe.exists(key)) === 0, 5_000);
    const late = await stream(`${shortLived.url}/chat/stream?ticket=${ticket}`);
    expect([late.status, (late.refusal as { code: string }).code]).toEqual([401, 'invalid_ticket']);
  });

  it('still takes the JWT header (non-browser clients), and refuses a stream with neither', async () => {
    const sse = await stream(`${gw.url}/chat/stream`, { Authorization: `Bearer ${jwtOf('dave')}` });
    expect(sse.status).toBe(200);
    const none = await stream(`${gw.url}/chat/stream`);
    expect([none.status, (none.refusal as { code: string }).code]).toEqual([401, 'missing_token']);
  });

  it('has no tickets without AUTH_JWT_SECRET: 404 tickets_disabled', async () => {
    const r = await ticketFor(open.url, `Bearer ${jwtOf('erin')}`);
    expect([r.status, r.body['code']]).toEqual([404, 'tickets_disabled']);
  });
});
