import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import jwt from 'jsonwebtoken';
import { Redis } from 'ioredis';
import { SseClient, startTestRedis, waitFor, type RedisHandle } from '@traffic-dam/stack';
import { startInstance, type TestInstance } from '../testing/instance';

const secret = 's'.repeat(40);
const tokenFor = (sub: string) => jwt.sign({ sub }, secret, { algorithm: 'HS256', expiresIn: 300 });

async function damOf(i: TestInstance): Promise<{ held: number; global: { used: number; capacity: number; live: number } }> {
  return (await (await fetch(`${i.url}/dam`)).json()) as { held: number; global: { used: number; capacity: number; live: number } };
}

describe('the dam in the gateway (real Redis)', () => {
  let redis: RedisHandle;

  beforeAll(async () => {
    redis = await startTestRedis(mkdtempSync(join(tmpdir(), 'td-gw-dam-')));
    // A worker heartbeat, so the AI gate lets questions in (no worker answers in these tests).
    const probe = new Redis(redis.url);
    await probe.set('td:workers:w', JSON.stringify({ workerId: 'w', capacityPerSec: 100, throughputPerSec: 0, inFlight: 0, answering: 0, ts: Date.now() }), 'PX', 600_000);
    probe.disconnect();
  });

  afterAll(async () => {
    await redis.stop();
  });

  describe('leaks', () => {
    let a: TestInstance;
    let b: TestInstance;

    beforeAll(async () => {
      // Both instances and 250 clients share this one process: deadlines sized for that, not for Redis.
      const env = { REDIS_REQUEST_TIMEOUT_MS: '2000', DAM_REDIS_TIMEOUT_MS: '2000' };
      [a, b] = await Promise.all([startInstance(redis.url, 'leak-a', env), startInstance(redis.url, 'leak-b', env)]);
    });

    afterAll(async () => {
      await Promise.all([a.app.close(), b.app.close()]);
    });

    it('10,000 sessions, 30% dropped mid-stream: global used and per-instance held return to 0', async () => {
      let dropped = 0;
      let opened = 0;
      const one = async (i: number): Promise<void> => {
        const on = i % 2 ? a : b;
        const sse = await new SseClient(`${on.url}/chat/stream`).open();
        expect(sse.status).toBe(200);
        const s = await sse.session();
        opened++;
        if (i % 10 < 3) {
          dropped++;
          sse.close(); // the client vanishes with the stream open
          return;
        }
        const del = await fetch(`${(i % 3 ? a : b).url}/chat/sessions/${s.sessionId}`, {
          method: 'DELETE',
          headers: { Authorization: `Bearer ${s.token}` },
        });
        expect(del.status).toBe(204);
        expect(await sse.ended(5_000)).toBe(true);
      };
      for (let batch = 0; batch < 40; batch++) {
        await Promise.all(Array.from({ length: 250 }, (_, k) => one(batch * 250 + k)));
      }
      expect(opened).toBe(10_000);
      expect(dropped).toBe(3_000);
      await waitFor('every slot released', async () => {
        const [da, db] = await Promise.all([damOf(a), damOf(b)]);
        return da.held === 0 && db.held === 0 && da.global.used === 0;
      });
      const [da, db] = await Promise.all([damOf(a), damOf(b)]);
      expect({ a: da.held, b: db.held, used: da.global.used, capacity: da.global.capacity }).toEqual({ a: 0, b: 0, used: 0, capacity: 2_000 });
      const probe = new Redis(redis.url);
      expect(await probe.keys('td:session:*')).toEqual([]);
      expect(await probe.hvals('td:dam:{dam}:held')).toEqual(['0', '0']);
      probe.disconnect();
    }, 240_000);
  });

  describe('bad input and per-user limits', () => {
    let g: TestInstance;

    beforeAll(async () => {
      g = await startInstance(redis.url, 'users', {
        AUTH_JWT_SECRET: secret,
        DAM_USER_MAX_SESSIONS: '3',
        DAM_USER_QUESTIONS: '2',
        DAM_USER_QUESTION_WINDOW_SEC: '60',
        DAM_SLOTS_PER_INSTANCE: '50',
      });
    });

    afterAll(async () => {
      await g.app.close();
    });

    it.each([
      ['no JWT', {}, 401, 'missing_token'],
      ['a forged JWT', { Authorization: `Bearer ${jwt.sign({ sub: 'eve' }, 'x'.repeat(40), { algorithm: 'HS256' })}` }, 401, 'invalid_credentials'],
      ['a malformed JWT', { Authorization: 'Bearer abc.def' }, 401, 'invalid_credentials'],
      ['not a bearer', { Authorization: 'Basic Zm9vOmJhcg==' }, 401, 'invalid_credentials'],
    ])('refuses a stream with %s (401) and takes no slot', async (_, headers, status, code) => {
      const before = (await damOf(g)).held;
      const sse = await new SseClient(`${g.url}/chat/stream`, { headers }).open();
      expect(sse.status).toBe(status);
      expect((sse.refusal as { code: string }).code).toBe(code);
      expect((await damOf(g)).held).toBe(before);
    });

    it('refuses oversized headers with a 4xx and keeps serving', async () => {
      const res = await fetch(`${g.url}/chat/stream`, { headers: { 'X-Junk': 'j'.repeat(64 * 1024) } }).catch(() => null);
      // Node's parser answers 431 or closes the connection; either way nothing is admitted.
      if (res) expect(res.status).toBe(431);
      expect((await fetch(`${g.url}/health/live`)).status).toBe(200);
    });

    it('holds a flooding user to its session cap without touching another user', async () => {
      const flood = await Promise.all(
        Array.from({ length: 12 }, () => new SseClient(`${g.url}/chat/stream`, { headers: { Authorization: `Bearer ${tokenFor('mallory')}` } }).open()),
      );
      try {
        expect(flood.filter((s) => s.status === 200)).toHaveLength(3);
        const refused = flood.filter((s) => s.status === 429);
        expect(refused).toHaveLength(9);
        expect(refused.every((s) => (s.refusal as { code: string }).code === 'user_session_limit')).toBe(true);
        expect(refused[0]?.headers.get('retry-after')).toMatch(/^[1-3]$/);
        expect(refused[0]?.headers.get('ratelimit-policy')).toBe('"user-sessions";q=3');
        const alice = await new SseClient(`${g.url}/chat/stream`, { headers: { Authorization: `Bearer ${tokenFor('alice')}` } }).open();
        expect(alice.status).toBe(200);
        alice.close();
      } finally {
        for (const s of flood) s.close();
      }
    });

    it('limits the question rate per user, with RateLimit headers', async () => {
      const sse = await new SseClient(`${g.url}/chat/stream`, { headers: { Authorization: `Bearer ${tokenFor('quiz')}` } }).open();
      try {
        const s = await sse.session();
        const post = () =>
          fetch(`${g.url}/chat/sessions/${s.sessionId}/messages`, {
            method: 'POST',
            headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${s.token}` },
            body: '{"question":"q"}',
          });
        const probe = new Redis(redis.url);
        const statuses: number[] = [];
        let last: Response | undefined;
        for (let i = 0; i < 3; i++) {
          last = await post();
          statuses.push(last.status);
          // No worker runs here: free the in-flight slot so only the rate decides.
          await probe.del(`td:session:{${s.sessionId}}:inflight`);
        }
        probe.disconnect();
        expect(statuses).toEqual([202, 202, 429]);
        const body = (await last?.json()) as { code: string };
        expect(body.code).toBe('user_rate_limited');
        expect(last?.headers.get('ratelimit-policy')).toBe('"questions";q=2;w=60');
        expect(last?.headers.get('ratelimit')).toMatch(/^"questions";r=0;t=\d+$/);
        expect(Number(last?.headers.get('retry-after'))).toBeGreaterThan(0);
      } finally {
        sse.close();
      }
    });
  });

  describe('budget refusals', () => {
    let g: TestInstance;

    beforeAll(async () => {
      // Closed streams hold their slot for the resume window (resume/); kept short where a test reopens at once.
      g = await startInstance(redis.url, 'full', { DAM_SLOTS_PER_INSTANCE: '5', SSE_RESUME_MS: '200' });
    });

    afterAll(async () => {
      await g.app.close();
    });

    it('answers 429 dam_full with Retry-After and RateLimit headers once the budget is spent', async () => {
      const streams = await Promise.all(Array.from({ length: 8 }, () => new SseClient(`${g.url}/chat/stream`).open()));
      try {
        expect(streams.filter((s) => s.status === 200)).toHaveLength(5);
        const refused = streams.filter((s) => s.status === 429);
        expect(refused).toHaveLength(3);
        const r = refused[0];
        expect((r?.refusal as { code: string; status: number }).code).toBe('dam_full');
        expect(r?.headers.get('content-type')).toContain('application/problem+json');
        expect(r?.headers.get('retry-after')).toMatch(/^[1-3]$/);
        expect(r?.headers.get('ratelimit-policy')).toBe('"sessions";q=5');
        expect(r?.headers.get('ratelimit')).toMatch(/^"sessions";r=0;t=[1-3]$/);
        const metrics = await (await fetch(`${g.url}/metrics`)).text();
        // Refused by the local ceiling or by the global budget: both are dam_full to the client.
        const refusedTotal = metrics
          .split('\n')
          .filter((l) => /^td_dam_refused_total\{reason="(dam_full|instance_full)"/.test(l))
          .reduce((acc, l) => acc + Number(l.slice(l.lastIndexOf(' ') + 1)), 0);
        expect(refusedTotal).toBe(3);
        expect(metrics).toMatch(/td_dam_held\{[^}]*\} 5/);
      } finally {
        for (const s of streams) s.close();
      }
      await waitFor('streams released', async () => (await damOf(g)).held === 0);
    });

    it('a crowd kept out gets a longer Retry-After, however fast the holders leave and come back', async () => {
      // Its own instance with 50 slots, so streams can turn over at the rate of the experiment's S1,
      // where nearly every admission is a user reopening right after its own answer.
      const c = await startInstance(redis.url, 'crowd', { DAM_SLOTS_PER_INSTANCE: '50', SSE_RESUME_MS: '200' });
      const openAll = (): Promise<SseClient[]> => Promise.all(Array.from({ length: 50 }, () => new SseClient(`${c.url}/chat/stream`).open()));
      let streams = await openAll();
      try {
        expect(streams.every((s) => s.status === 200)).toBe(true);
        // 1,200 refusals in a few seconds stand for hundreds of clients waiting (Little's law); to
        // bring them back at about 50 a second, the Retry-After must grow past the first 1-3 s. The
        // 600 admissions in between must not shorten it: each holder takes back the slot it freed.
        const given: number[] = [];
        let last: Response | undefined;
        for (let round = 0; round < 12; round++) {
          const rs = await Promise.all(Array.from({ length: 100 }, () => fetch(`${c.url}/chat/stream`)));
          for (const r of rs) {
            expect(r.status).toBe(429);
            given.push(Number(r.headers.get('retry-after')));
            await r.body?.cancel();
          }
          last = rs[rs.length - 1];
          for (const s of streams) s.close();
          await waitFor('streams released', async () => (await damOf(c)).held === 0);
          streams = await openAll();
          expect(streams.every((s) => s.status === 200)).toBe(true);
        }
        // The first hundred, a burst rather than a crowd: 1-3 s.
        expect(Math.max(...given.slice(0, 100))).toBeLessThanOrEqual(3);
        // The last hundred: none under 2 s, some over 3 s, none over 30 s.
        const tail = given.slice(-100);
        expect(Math.min(...tail)).toBeGreaterThanOrEqual(2);
        expect(Math.max(...tail)).toBeGreaterThan(3);
        expect(Math.max(...tail)).toBeLessThanOrEqual(30);
        expect(last?.headers.get('ratelimit')).toBe(`"sessions";r=0;t=${last?.headers.get('retry-after')}`);
      } finally {
        for (const s of streams) s.close();
      }
      await waitFor('streams released', async () => (await damOf(c)).held === 0);
      await c.app.close();
    });
  });

  describe('modes', () => {
    it('shadow admits everything, counts what it would have refused, and keeps the budget exact', async () => {
      const g = await startInstance(redis.url, 'shadow', { DAM_MODE: 'shadow', DAM_SLOTS_PER_INSTANCE: '2', SSE_RESUME_MS: '200' });
      const streams = await Promise.all(Array.from({ length: 5 }, () => new SseClient(`${g.url}/chat/stream`).open()));
      try {
        expect(streams.map((s) => s.status)).toEqual([200, 200, 200, 200, 200]);
        const v = (await (await fetch(`${g.url}/dam`)).json()) as { mode: string; held: number; unbudgeted: number };
        expect(v).toMatchObject({ mode: 'shadow', held: 2, unbudgeted: 3 });
        const metrics = await (await fetch(`${g.url}/metrics`)).text();
        const shadow = metrics
          .split('\n')
          .filter((l) => l.startsWith('td_dam_shadow_refused_total{'))
          .reduce((acc, l) => acc + Number(l.slice(l.lastIndexOf(' ') + 1)), 0);
        expect(shadow).toBe(3);
      } finally {
        for (const s of streams) s.close();
      }
      await waitFor('streams released', async () => {
        const v = (await (await fetch(`${g.url}/dam`)).json()) as { held: number; unbudgeted: number };
        return v.held === 0 && v.unbudgeted === 0;
      });
      await g.app.close();
    });

    it('off is the "before" server: no budget in Redis, nothing refused', async () => {
      const probe = new Redis(redis.url);
      await probe.flushall();
      const g = await startInstance(redis.url, 'off', { DAM_MODE: 'off', DAM_SLOTS_PER_INSTANCE: '1' });
      const streams = await Promise.all(Array.from({ length: 4 }, () => new SseClient(`${g.url}/chat/stream`).open()));
      try {
        expect(streams.map((s) => s.status)).toEqual([200, 200, 200, 200]);
        expect(await probe.keys('td:dam:*')).toEqual([]);
        expect(((await (await fetch(`${g.url}/dam`)).json()) as { mode: string }).mode).toBe('off');
      } finally {
        for (const s of streams) s.close();
        probe.disconnect();
        await g.app.close();
      }
    });
  });

  describe('session TTLs release the slot', () => {
    it.each([
      ['idle', { DAM_SESSION_IDLE_MS: '400' }, 400],
      ['lifetime', { DAM_SESSION_MAX_MS: '700', DAM_SESSION_IDLE_MS: '60000' }, 700],
    ])('%s: event expired, not before the TTL, the stream closes, held back to 0', async (reason, env, ttl) => {
      const g = await startInstance(redis.url, `ttl-${reason}`, env);
      try {
        const sse = await new SseClient(`${g.url}/chat/stream`).open();
        await sse.session();
        const e = await sse.waitFor((x) => x.event === 'expired');
        expect(e.data).toEqual({ reason });
        expect(e.at).toBeGreaterThanOrEqual(ttl - 50);
        expect(await sse.ended()).toBe(true);
        await waitFor('stream released', async () => ((await (await fetch(`${g.url}/dam`)).json()) as { held: number }).held === 0);
      } finally {
        await g.app.close();
      }
    });
  });

  describe('a flood of connects from one IP', () => {
    it('is held to the per-user cap when limits by IP are on, and a JWT user still gets in', async () => {
      const g = await startInstance(redis.url, 'ipflood', {
        DAM_LIMIT_BY_IP: 'true',
        AUTH_JWT_SECRET: secret,
        AUTH_JWT_REQUIRED: 'false',
        DAM_USER_MAX_SESSIONS: '4',
      });
      const flood = await Promise.all(Array.from({ length: 30 }, () => new SseClient(`${g.url}/chat/stream`).open()));
      try {
        expect(flood.filter((s) => s.status === 200)).toHaveLength(4);
        expect(flood.filter((s) => s.status === 429 && (s.refusal as { code: string }).code === 'user_session_limit')).toHaveLength(26);
        const bob = await new SseClient(`${g.url}/chat/stream`, { headers: { Authorization: `Bearer ${tokenFor('bob')}` } }).open();
        expect(bob.status).toBe(200);
        bob.close();
      } finally {
        for (const s of flood) s.close();
        await g.app.close();
      }
    });
  });
});
