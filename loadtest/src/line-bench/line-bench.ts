// npm run bench:line [-- --waiters 2000] [--out dir]   (after npm run build: it runs dist/apps/gateway)
//
// What the waiting line costs and how fast it moves, for BENCHMARKS.md on a quiet machine:
//   1. memory (memory-probe.ts, one gateway in a process of its own, its heap read after a full
//      GC, the streams held by yet another process): per waiting stream against per admitted
//      session, in the gateway and in Redis, and the line's own share of it;
//   2. on a stack of 2 gateways behind nginx: a waiter holds no slot; the handoff (a session ends,
//      the head of the line hears `session`, ms); a gateway SIGKILLed with waiters (ms until they
//      are out of the line).
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { SseClient, Stack, percentile, repoRoot, startLocalRedis } from '@traffic-dam/stack';

interface DamView {
  held: number;
  global: { used: number; capacity: number } | null;
  line: { length: number; waitingHere: number };
}

const dam = async (url: string): Promise<DamView> => (await (await fetch(`${url}/dam`, { signal: AbortSignal.timeout(5_000) })).json()) as DamView;

async function until(label: string, check: () => Promise<boolean> | boolean, timeoutMs = 60_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`${label}: not within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Part 1 in its own process (node --expose-gc), against a Redis of its own. */
async function memory(n: number, dir: string): Promise<Record<string, number>> {
  const redis = await startLocalRedis({ dir });
  try {
    const out = execFileSync(process.execPath, ['--expose-gc', '--import', 'tsx', join(__dirname, 'memory-probe.ts'), redis.url, String(n)], {
      env: { ...process.env, TSX_TSCONFIG_PATH: 'loadtest/tsconfig.json' },
      stdio: ['ignore', 'pipe', 'inherit'],
      timeout: 600_000,
    });
    const gateway = JSON.parse(out.toString().trim().split('\n').at(-1) as string) as Record<string, number>;
    // The line's own share, measured in the library alone (a script of libs/dam, run, not imported).
    const lib = execFileSync(process.execPath, ['--expose-gc', '--import', 'tsx', join(repoRoot(__dirname), 'libs/dam/bench/line-memory.bench.ts'), redis.url, String(5 * n)], {
      env: { ...process.env, TSX_TSCONFIG_PATH: 'libs/dam/bench/tsconfig.json' },
      stdio: ['ignore', 'pipe', 'inherit'],
      timeout: 600_000,
    });
    const line = JSON.parse(lib.toString().trim().split('\n').at(-1) as string) as { heapPerWaiter: number };
    return { ...gateway, lineHeapPerWaiter: line.heapPerWaiter };
  } finally {
    await redis.stop();
  }
}

async function openMany(url: string, n: number, wait: boolean): Promise<SseClient[]> {
  const out: SseClient[] = [];
  // In batches: a burst of thousands of handshakes measures the burst, not the waiter.
  for (let i = 0; i < n; i += 200) {
    out.push(...(await Promise.all(Array.from({ length: Math.min(200, n - i) }, () => new SseClient(`${url}/chat/stream${wait ? '?wait=600' : ''}`).open(30_000)))));
  }
  return out;
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { waiters: { type: 'string', default: '2000' }, out: { type: 'string' }, help: { type: 'boolean', default: false } } });
  if (values.help) {
    process.stdout.write('npm run bench:line [-- --waiters N (default 2000)] [--out DIR (default loadtest/results)]\n');
    return;
  }
  const n = Number(values.waiters);
  if (!Number.isInteger(n) || n < 100 || n > 20_000) throw new Error('--waiters must be an integer from 100 to 20,000');
  const dir = mkdtempSync(join(tmpdir(), 'td-line-bench-'));
  const log = (l: string) => process.stdout.write(`${l}\n`);
  log(`memory: ${n} sessions, then ${n} waiting streams, on one gateway`);
  mkdirSync(join(dir, 'probe'), { recursive: true });
  const mem = await memory(n, join(dir, 'probe'));
  // As many slots as waiters, so the same number of sessions can be measured beside them.
  log('the line on 2 gateways behind nginx');
  const stack = new Stack({ dir, gateways: 2, workers: 1, port: 0, env: { LOG_LEVEL: 'warn', DAM_SLOTS_PER_INSTANCE: String(n), DAM_QUEUE_MAX: String(4 * n) } });
  const started = new Date().toISOString();
  const load0 = loadavg();
  const all: SseClient[] = [];
  await stack.start();
  try {
    const [g0, g1] = stack.gateways as [(typeof stack.gateways)[0], (typeof stack.gateways)[0]];
    const kb = (b: number) => `${(b / 1024).toFixed(2)} KB`;
    log(
      `memory per waiting stream: gateway heap ${kb(mem['gatewayHeapPerWaiter'] ?? NaN)} (of which the line's own ${kb(mem['lineHeapPerWaiter'] ?? NaN)}), RSS ${kb(mem['gatewayRssPerWaiter'] ?? NaN)}, Redis ${kb(mem['redisPerWaiter'] ?? NaN)}; ` +
        `per admitted session: heap ${kb(mem['gatewayHeapPerSession'] ?? NaN)}, RSS ${kb(mem['gatewayRssPerSession'] ?? NaN)}, Redis ${kb(mem['redisPerSession'] ?? NaN)}`,
    );
    // 2. A waiter holds no slot: fill gateway 0's share, then n waiters on it.
    await until('settled', async () => (await dam(g0.url)).global?.capacity === 2 * n);
    const sessions = await openMany(g0.url, n, false);
    all.push(...sessions);
    await Promise.all(sessions.map((s) => s.session(30_000)));
    const filler = await openMany(g1.url, n, false);
    all.push(...filler);
    await Promise.all(filler.map((s) => s.session(30_000)));
    const waiters = await openMany(g0.url, n, true);
    all.push(...waiters);
    const notQueued = waiters.filter((w) => w.status !== 200);
    if (notQueued.length) throw new Error(`${notQueued.length} waiters refused: ${JSON.stringify(notQueued[0]?.refusal)}`);
    await Promise.all(waiters.map((w) => w.waitFor((e) => e.event === 'queued', 30_000)));
    const view = await dam(g0.url);
    log(`slots with ${n} waiters: used ${view.global?.used} of ${view.global?.capacity} (the waiters hold none), line ${view.line.length}`);

    // 2. Handoff: one session ends (DELETE), the head of the line hears `session`; 200 times.
    const byPlace = [...waiters].sort((a, b) => place(a) - place(b));
    const handoffs: number[] = [];
    for (let i = 0; i < Math.min(200, n); i++) {
      const head = byPlace[i] as SseClient;
      const t0 = performance.now();
      await (sessions[i] as SseClient).end();
      await head.waitFor((e) => e.event === 'session', 30_000);
      handoffs.push(performance.now() - t0);
    }
    log(`handoff (DELETE sent -> the head's session event), ${handoffs.length}: p50 ${percentile(handoffs, 50).toFixed(1)} ms, p99 ${percentile(handoffs, 99).toFixed(1)} ms`);

    // 3. Kill: 300 waiters on gateway 0 and as many on gateway 1; SIGKILL gateway 0.
    const more = await openMany(g1.url, 300, true);
    all.push(...more);
    const moreRefused = more.filter((w) => w.status !== 200);
    if (moreRefused.length) throw new Error(`${moreRefused.length} of 300 more waiters refused: ${JSON.stringify(moreRefused[0]?.refusal)}`);
    await Promise.all(more.map((w) => w.waitFor((e) => e.event === 'queued', 30_000)));
    const before = (await dam(g1.url)).line.length;
    const onVictim = (await dam(g0.url)).line.waitingHere;
    const killedAt = Date.now();
    g0.child.signal('SIGKILL');
    await until('the victim\u2019s waiters out of the line', async () => (await dam(g1.url)).line.length === before - onVictim, 30_000);
    const leftMs = Date.now() - killedAt;
    log(`a gateway SIGKILLed with ${onVictim} waiters: out of the line ${leftMs} ms later (within DAM_HEARTBEAT_TTL_MS)`);

    const result = {
      command: `npm run bench:line -- --waiters ${n}`,
      startedAt: started,
      machine: { cpus: cpus().length, cpuModel: cpus()[0]?.model ?? '', node: process.version, loadavgAtStart: load0, loadavgAtEnd: loadavg() },
      waiters: n,
      memoryBytes: mem,
      slotsWithWaiters: { used: view.global?.used, capacity: view.global?.capacity, line: view.line.length },
      handoffMs: { count: handoffs.length, p50: percentile(handoffs, 50), p99: percentile(handoffs, 99), max: Math.max(...handoffs) },
      killedGateway: { waiters: onVictim, outOfTheLineMs: leftMs },
    };
    const out = resolve(values.out ?? 'loadtest/results');
    mkdirSync(out, { recursive: true });
    const file = join(out, `line-bench-${started.replace(/[:.]/g, '-')}.json`);
    writeFileSync(file, JSON.stringify(result, null, 1));
    log(`results: ${file}`);
  } finally {
    for (const c of all) c.close();
    await stack.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The last place a waiter was told. */
function place(c: SseClient): number {
  return (c.events.filter((e) => e.event === 'queued').at(-1)?.data as { position: number } | undefined)?.position ?? Infinity;
}

main().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
