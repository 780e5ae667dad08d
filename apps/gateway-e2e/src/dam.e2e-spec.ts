import { Redis } from 'ioredis';
import { SseClient, waitFor, type Stack } from '@traffic-dam/stack';
import { metricValue, startE2eStack } from './e2e-stack';

interface DamView {
  instanceId: string;
  held: number;
  generation: string;
  fallback: { active: boolean };
  global: { used: number; capacity: number; live: number; stale: boolean } | null;
}

async function dam(url: string): Promise<DamView> {
  return (await (await fetch(`${url}/dam`, { signal: AbortSignal.timeout(2_000) })).json()) as DamView;
}

/** Outcomes by status and problem code ("200", "429 dam_full", ...), so a miss shows what came instead. */
function outcomes(streams: SseClient[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const s of streams) {
    const code = (s.refusal as { code?: string } | undefined)?.code;
    const key = s.status === 200 ? '200' : `${s.status} ${code ?? String(s.refusal).slice(0, 60)}`;
    out[key] = (out[key] ?? 0) + 1;
  }
  return out;
}

async function openMany(url: string, n: number): Promise<SseClient[]> {
  return Promise.all(Array.from({ length: n }, () => new SseClient(`${url}/chat/stream`).open(30_000)));
}

describe('the dam through nginx: 2 gateways with 1,000 slots each', () => {
  let stack: Stack;
  let open: SseClient[] = [];

  beforeAll(async () => {
    stack = await startE2eStack({ env: { DAM_SLOTS_PER_INSTANCE: '1000', LOG_LEVEL: 'warn' } });
  });

  afterEach(() => {
    for (const s of open) s.close();
    open = [];
  });

  afterAll(async () => {
    await stack?.stop();
  });

  it('2,500 streams at once: exactly 2,000 admitted, 500 refused with 429 dam_full; a full budget refuses; SIGKILL and restart', async () => {
    open = await openMany(stack.url, 2_500);
    const ok = open.filter((s) => s.status === 200);
    const refused = open.filter((s) => s.status === 429);
    expect({ ok: ok.length, refused: refused.length }).toEqual({ ok: 2_000, refused: 500 });
    expect(refused.every((s) => (s.refusal as { code: string }).code === 'dam_full')).toBe(true);
    expect(refused.every((s) => /^[1-3]$/.test(s.headers.get('retry-after') ?? ''))).toBe(true);
    await Promise.all(ok.map((s) => s.session(20_000)));
    const views = await Promise.all(stack.gateways.map((g) => dam(g.url)));
    expect(views.map((v) => v.held).sort()).toEqual([1_000, 1_000]);
    // An instance's global view is as of its last word from Redis (an admit, or a beat that writes
    // a count decided on the local share when an admission missed its deadline): the next beat at the latest.
    await waitFor('the global view counts both instances', async () => {
      const g = (await dam(stack.url)).global;
      return g?.used === 2_000 && g.capacity === 2_000 && g.live === 2;
    });

    // Budget full: further connects are refused, through nginx (how fast: loadtest/src/timings).
    const more = await openMany(stack.url, 50);
    expect(outcomes(more)).toEqual({ '429 dam_full': 50 });

    // SIGKILL one gateway: its slots and its share leave the budget (within its heartbeat TTL).
    const [victim, survivor] = stack.gateways as [(typeof stack.gateways)[0], (typeof stack.gateways)[0]];
    const killedAt = Date.now();
    victim.child.signal('SIGKILL');
    await waitFor('capacity shrinks to 1,000', async () => {
      const g = (await dam(survivor.url)).global;
      return g?.capacity === 1_000 && g.live === 1 && g.used === 1_000;
    });
    process.stdout.write(`capacity back to 1,000 ${Date.now() - killedAt} ms after SIGKILL\n`);
    // The survivor holds its 1,000 and admits no more.
    const beyond = await openMany(survivor.url, 20);
    open.push(...more, ...beyond);
    expect(beyond.every((s) => s.status === 429)).toBe(true);

    // Restart it: 2,000 again, and the new instance takes its 1,000.
    await stack.restartGateway(stack.gateways.indexOf(victim));
    await waitFor('capacity back to 2,000', async () => (await dam(survivor.url)).global?.capacity === 2_000);
    const fresh = await openMany(stack.url, 1_100);
    open.push(...fresh);
    expect(outcomes(fresh)).toEqual({ '200': 1_000, '429 dam_full': 100 });
    // Exact at once, or (an admit that timed out under load and was decided on the local share)
    // within one heartbeat, which writes the true count.
    await waitFor('used 2,000 of 2,000', async () => {
      const g = (await dam(survivor.url)).global;
      return g?.used === 2_000 && g.capacity === 2_000;
    });
  });

  it('a gateway stopped long enough to be reaped is fenced on SIGCONT and re-registers with its true count', async () => {
    await waitFor('budget empty', async () => (await dam(stack.gateways[0]!.url)).global?.used === 0);
    const [paused, other] = stack.gateways as [(typeof stack.gateways)[0], (typeof stack.gateways)[0]];
    open = await openMany(paused.url, 30);
    expect(open.every((s) => s.status === 200)).toBe(true);
    const before = await dam(paused.url);
    paused.child.signal('SIGSTOP');
    try {
      await waitFor('reaped', async () => (await dam(other.url)).global?.live === 1);
      expect((await dam(other.url)).global?.used).toBe(0);
    } finally {
      paused.child.signal('SIGCONT');
    }
    await waitFor('re-registered', async () => {
      const v = await dam(paused.url);
      return v.generation !== before.generation && v.global?.live === 2 && v.global.used === 30;
    });
    expect(await metricValue(paused.url, 'td_dam_events_total{type="fenced"')).toBeGreaterThanOrEqual(1);
    for (const s of open) s.close();
    // Released when their resume window (SSE_RESUME_MS, 5 s) ends.
    await waitFor('released', async () => (await dam(other.url)).global?.used === 0);
    const probe = new Redis(stack.redisUrl);
    try {
      const held = (await probe.hvals('td:dam:{dam}:held')).map(Number);
      expect(held.every((n) => n >= 0)).toBe(true);
    } finally {
      probe.disconnect();
    }
  });

  it('Redis stopped for 10 s under load: no crash, no admission waits for Redis, local share exact, reconciled after', async () => {
    const redis = stack.redis?.child;
    if (!redis) throw new Error('the stack runs its own Redis');
    let stop = false;
    const statuses = new Map<number, number>();
    let attempts = 0;
    const held: SseClient[] = [];
    // Load: 20 clients keep connecting; half of what gets in stays open, the rest closes. An
    // admission that waited for the stopped Redis would take the rest of the outage (10 s): the
    // client gives up after 5 s, and that shows as status 0. (How long admissions take: loadtest/src/timings.)
    const loop = async (k: number) => {
      let i = 0;
      while (!stop) {
        const s = await new SseClient(`${stack.url}/chat/stream`).open(5_000).catch(() => null);
        const code = s?.status ?? 0;
        statuses.set(code, (statuses.get(code) ?? 0) + 1);
        attempts++;
        if (s && s.status === 200 && (i++ + k) % 2 === 0 && held.length < 600) held.push(s);
        else s?.close();
      }
    };
    const loops = Array.from({ length: 20 }, (_, k) => loop(k));
    await waitFor('the load admitted 100 streams', () => (statuses.get(200) ?? 0) >= 100);
    redis.signal('SIGSTOP');
    const stoppedAt = Date.now();
    try {
      await waitFor('both in fallback', async () => (await Promise.all(stack.gateways.map((g) => dam(g.url)))).every((v) => v.fallback.active));
      // Under load without Redis: 500 more streams asked for, each decided in the fallback.
      const inFallbackFrom = attempts;
      await waitFor('500 streams asked for in the fallback', () => attempts >= inFallbackFrom + 500);
      stop = true;
      await Promise.all(loops);
      // The streams the load closed hold their slots until their resume window ends (SSE_RESUME_MS):
      // let it end first, so no slot comes free during the burst below.
      await waitFor(
        'no stream waiting for its client',
        async () => (await Promise.all(stack.gateways.map((g) => metricValue(g.url, 'td_sse_sessions_waiting')))).every((n) => n === 0),
        10_000,
      );
      // The local share is exact: ask each gateway for more than its share; it fills to 1,000, no further.
      for (const g of stack.gateways) {
        const heldBefore = (await dam(g.url)).held;
        const burst = await openMany(g.url, 1_100);
        held.push(...burst.filter((b) => b.status === 200));
        const admitted = burst.filter((b) => b.status === 200).length;
        expect({ heldBefore, admitted, total: heldBefore + admitted }).toEqual({ heldBefore, admitted: 1_000 - heldBefore, total: 1_000 });
        expect(burst.filter((b) => b.status === 429)).toHaveLength(100 + heldBefore);
        expect((await dam(g.url)).held).toBe(1_000);
      }
      // The scenario's length, not a synchronisation: the outage outlasts the clients' 5 s, so an
      // admission that waited for Redis would have shown as status 0.
      await new Promise((r) => setTimeout(r, Math.max(0, 10_000 - (Date.now() - stoppedAt))));
    } finally {
      stop = true;
      redis.signal('SIGCONT');
    }
    await Promise.all(loops);
    expect(stack.gateways.every((g) => g.child.running)).toBe(true);
    expect(statuses.get(0) ?? 0).toBe(0);
    expect([...statuses.keys()].every((c) => c === 200 || c === 429)).toBe(true);
    // Reconciled within one heartbeat: Redis's count equals what the gateways hold.
    await waitFor('reconciled', async () => {
      const views = await Promise.all(stack.gateways.map((g) => dam(g.url)));
      const sum = views.reduce((a, v) => a + v.held, 0);
      return views.every((v) => !v.fallback.active) && views[0]?.global?.used === sum && !views[0].global.stale;
    });
    // What the gateways hold is what the clients still have open (closes still in flight settle).
    let lastSeen = { gateways: -1, clients: -1 };
    await waitFor('held equals open streams', async () => {
      const views = await Promise.all(stack.gateways.map((g) => dam(g.url)));
      lastSeen = { gateways: views.reduce((a, v) => a + v.held, 0), clients: held.filter((s) => !s.closed).length };
      return lastSeen.gateways === lastSeen.clients;
      // A stream the load closed holds its slot for its resume window (SSE_RESUME_MS, 5 s).
    }).catch(() => undefined);
    expect(lastSeen.gateways).toBe(lastSeen.clients);
    for (const s of held) s.close();
    process.stdout.write(`Redis outage load: ${JSON.stringify(Object.fromEntries(statuses))}\n`);
  });
});
