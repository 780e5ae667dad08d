import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { TcpProxy, startTestRedis, waitFor, type RedisHandle } from '@traffic-dam/stack';
import { CircuitBreaker, type BreakerOptions } from '../index';

describe('CircuitBreaker shared through real Redis', () => {
  let redis: RedisHandle;
  const clients: Redis[] = [];
  const breakers: CircuitBreaker[] = [];

  async function breaker(id: string, probe: BreakerOptions['probe'], transitions: string[] = [], o: { url?: string; pollMs?: number } = {}): Promise<CircuitBreaker> {
    const c = new Redis(o.url ?? redis.url);
    clients.push(c);
    const b = new CircuitBreaker({
      redis: c,
      instanceId: id,
      minVolume: 4,
      errorRatio: 0.5,
      openMs: 600,
      pollMs: o.pollMs ?? 50,
      // A reply that comes late on a loaded machine still counts: no test here is about the deadline.
      redisTimeoutMs: 2_000,
      probe,
      onTransition: (t) => transitions.push(`${t.from}->${t.to}:${t.reason}`),
    });
    breakers.push(b);
    await b.start();
    return b;
  }

  beforeAll(async () => {
    redis = await startTestRedis(mkdtempSync(join(tmpdir(), 'td-breaker-')));
  });

  afterEach(async () => {
    for (const b of breakers.splice(0)) b.stop();
    for (const c of clients.splice(0)) c.disconnect();
    const f = new Redis(redis.url);
    await f.flushall();
    f.disconnect();
  });

  afterAll(async () => {
    await redis.stop();
  });

  it('trips on the error ratio for every instance, one instance probes, and it closes for all', async () => {
    let probes = 0;
    const probe = async () => {
      probes++;
      await new Promise((r) => setTimeout(r, 100)); // a probe takes a while: the others must not probe meanwhile
      return true;
    };
    const ta: string[] = [];
    const tb: string[] = [];
    const a = await breaker('a', probe, ta);
    const b = await breaker('b', probe, tb);
    // Below the minimum volume nothing trips, however bad: once Redis ran the records (a command
    // after them on the same connection has answered), b reads the shared state and stays closed.
    for (let i = 0; i < 3; i++) a.record('failure');
    await clients[0]?.ping();
    await b.refresh();
    expect(b.allow().allowed).toBe(true);
    a.record('timeout');
    await waitFor('open on both', () => !a.allow().allowed && !b.allow().allowed, { pollMs: 10 });
    const refused = b.allow();
    expect(refused).toMatchObject({ allowed: false, state: 'open' });
    expect(refused.allowed === false && refused.retryAfterMs).toBeLessThanOrEqual(600);
    // Open period over: half-open, exactly one probe among the instances, then closed for both.
    await waitFor('closed on both after the probe', () => a.allow().allowed && b.allow().allowed, { pollMs: 10 });
    expect(probes).toBe(1);
    expect(ta).toContain('closed->open:error_ratio');
    expect(tb).toEqual(expect.arrayContaining(['closed->open:error_ratio', 'half_open->closed:probe_ok']));
  });

  it('an instance whose half-open read is older than another instance\'s probe does not probe again', async () => {
    const u = new URL(redis.url);
    const relay = await TcpProxy.start(u.hostname, Number(u.port));
    let probes = 0;
    let finish: () => void = () => undefined;
    const finished = new Promise<void>((resolve) => (finish = resolve));
    const probe = async () => {
      probes++;
      await finished;
      return true;
    };
    try {
      const a = await breaker('a', probe);
      // b reads the shared state only when told to (refresh), over a link whose replies can be held.
      const b = await breaker('b', probe, [], { url: relay.url(redis.url), pollMs: 600_000 });
      for (let i = 0; i < 4; i++) a.record('failure');
      await waitFor('open on a', () => !a.allow().allowed, { pollMs: 10 });
      await b.refresh();
      expect(b.allow().allowed).toBe(false);
      await waitFor('a probing, half-open', () => probes === 1, { pollMs: 10 });
      // b reads half-open now; the reply comes only after a's probe has closed it and let go of the lock.
      relay.holdReplies();
      const stale = b.refresh();
      await waitFor("b's half-open reply on its way", () => relay.heldReplies > 0, { pollMs: 5 });
      finish();
      await waitFor('closed on a', () => a.allow().allowed, { pollMs: 10 });
      const direct = new Redis(redis.url);
      clients.push(direct);
      await waitFor('the probe lock let go', async () => (await direct.exists('td:dam:{breaker}:probe')) === 0, { pollMs: 10 });
      relay.releaseReplies();
      await stale;
      // b polls no more: it gets to closed only through its own take of the lock.
      await waitFor('closed on b', () => b.allow().allowed, { pollMs: 10 });
      expect(probes).toBe(1);
    } finally {
      await relay.stop();
    }
  });

  it('a failed probe opens it again; a good answer ratio keeps it closed', async () => {
    let healthy = false;
    const probe = async () => healthy;
    const a = await breaker('a', probe);
    for (let i = 0; i < 10; i++) a.record(i < 6 ? 'success' : 'failure');
    await clients[0]?.ping();
    await a.refresh();
    expect(a.allow().allowed).toBe(true); // 4 of 10 is under 50%
    for (let i = 0; i < 10; i++) a.record('failure');
    await waitFor('open', () => !a.allow().allowed, { pollMs: 10 });
    await waitFor('re-opened by a failed probe', () => a.current.reason === 'probe_failed', { pollMs: 10 });
    expect(a.allow().allowed).toBe(false);
    healthy = true;
    await waitFor('closed by a good probe', () => a.allow().allowed, { pollMs: 10 });
  });

  it('trips at once when no worker is alive', async () => {
    const a = await breaker('a', async () => false);
    const b = await breaker('b', async () => false);
    await a.trip('no_worker');
    expect(a.allow().allowed).toBe(false);
    await waitFor('open on b too', () => !b.allow().allowed, { pollMs: 10 });
    expect(b.current.reason).toBe('no_worker');
  });
});
