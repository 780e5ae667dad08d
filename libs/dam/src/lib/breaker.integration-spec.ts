import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { eventually, startTestRedis, type RedisHandle } from '@traffic-dam/stack';
import { CircuitBreaker, type BreakerOptions } from '../index';

describe('CircuitBreaker shared through real Redis', () => {
  let redis: RedisHandle;
  const clients: Redis[] = [];
  const breakers: CircuitBreaker[] = [];

  async function breaker(id: string, probe: BreakerOptions['probe'], transitions: string[] = []): Promise<CircuitBreaker> {
    const c = new Redis(redis.url);
    clients.push(c);
    const b = new CircuitBreaker({
      redis: c,
      instanceId: id,
      minVolume: 4,
      errorRatio: 0.5,
      openMs: 600,
      pollMs: 50,
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
      await new Promise((r) => setTimeout(r, 100));
      return true;
    };
    const ta: string[] = [];
    const tb: string[] = [];
    const a = await breaker('a', probe, ta);
    const b = await breaker('b', probe, tb);
    // Below the minimum volume nothing trips, however bad.
    for (let i = 0; i < 3; i++) a.record('failure');
    await sleep(100);
    expect(b.allow().allowed).toBe(true);
    a.record('timeout');
    await eventually('breaker state', () => !a.allow().allowed && !b.allow().allowed, 1_000, 10);
    const refused = b.allow();
    expect(refused).toMatchObject({ allowed: false, state: 'open' });
    expect(refused.allowed === false && refused.retryAfterMs).toBeLessThanOrEqual(600);
    // Open period over: half-open, exactly one probe among the instances, then closed for both.
    await eventually('breaker state', () => a.allow().allowed && b.allow().allowed, 3_000, 10);
    expect(probes).toBe(1);
    expect(ta).toContain('closed->open:error_ratio');
    expect(tb).toEqual(expect.arrayContaining(['closed->open:error_ratio', 'half_open->closed:probe_ok']));
  });

  it('a failed probe opens it again; a good answer ratio keeps it closed', async () => {
    let healthy = false;
    const probe = async () => healthy;
    const a = await breaker('a', probe);
    for (let i = 0; i < 10; i++) a.record(i < 6 ? 'success' : 'failure');
    await sleep(100);
    expect(a.allow().allowed).toBe(true); // 4 of 10 is under 50%
    for (let i = 0; i < 10; i++) a.record('failure');
    await eventually('breaker state', () => !a.allow().allowed, 1_000, 10);
    await eventually('breaker state', () => a.current.reason === 'probe_failed', 3_000, 10);
    expect(a.allow().allowed).toBe(false);
    healthy = true;
    await eventually('breaker state', () => a.allow().allowed, 3_000, 10);
  });

  it('trips at once when no worker is alive', async () => {
    const a = await breaker('a', async () => false);
    const b = await breaker('b', async () => false);
    await a.trip('no_worker');
    expect(a.allow().allowed).toBe(false);
    await eventually('breaker state', () => !b.allow().allowed, 1_000, 10);
    expect(b.current.reason).toBe('no_worker');
  });
});

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
