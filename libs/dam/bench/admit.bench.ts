/**
 * Admission benchmark: one slot acquired then released per operation, against a local Redis that
 * this script starts (and stops) itself. Three contenders side by side in the same run:
 *
 *   dam              Dam.admit() + lease.release()   (this library, public API)
 *   redis-semaphore  Semaphore.acquire() + release()
 *   rlf              RateLimiterRedis.consume() + reward()
 *
 * Closed model: N concurrent loops (N = 1, 16, 256), a short warm-up, then a fixed window.
 * Contenders alternate (rotated order per repetition) and each figure is the median of the
 * repetitions, because the machine is a shared, noisy 2-core VM. Then an open-model run at a
 * fixed rate (default 5,000 acquisitions/s): the dam first (its target is p99 <= 1 ms), then the
 * other two under the same conditions as a reference for what the machine allows.
 *
 *   node --import tsx libs/dam/bench/admit.bench.ts [--seconds 5] [--warmup 0.5] [--reps 3]
 *        [--concurrency 1,16,256] [--rate 5000] [--rate-seconds 5] [--max-outstanding 1000]
 *        [--pacer timer|spin] [--contenders dam,redis-semaphore,rlf] [--rate-only]
 *        [--out <file.json>] [--no-json]
 *
 * Release of the dam: lease.release() is fire-and-forget by design. To charge the dam for the
 * release round trip exactly like the other two (whose release() is awaited), each op awaits
 * `lease.confirmation`, which settles when Redis applied the release. Nothing is added on the wire.
 *
 * The dam batches: admits and releases made in the same turn of the event loop go together in
 * one script call, so under concurrency a round trip serves many. The other two send one call per
 * acquire and per release, as their APIs do.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { cpus, release as kernelRelease, loadavg, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { Redis, type RedisOptions } from 'ioredis';
import { RateLimiterRedis } from 'rate-limiter-flexible';
import { Semaphore } from 'redis-semaphore';
import { Dam, type DamEvent } from '../src/index';

// ---------------------------------------------------------------------------------------------
// Options

const { values: args } = parseArgs({
  options: {
    seconds: { type: 'string', default: '5' },
    warmup: { type: 'string', default: '0.5' },
    reps: { type: 'string', default: '3' },
    concurrency: { type: 'string', default: '1,16,256' },
    rate: { type: 'string', default: '5000' },
    'rate-seconds': { type: 'string', default: '5' },
    'max-outstanding': { type: 'string', default: '1000' },
    pacer: { type: 'string', default: 'timer' },
    'rate-only': { type: 'boolean', default: false },
    contenders: { type: 'string', default: 'dam,redis-semaphore,rlf' },
    out: { type: 'string' },
    'no-json': { type: 'boolean', default: false },
  },
});

function positive(name: string, raw: string | undefined): number {
  const v = Number(raw);
  if (!Number.isFinite(v) || v <= 0) throw new RangeError(`--${name} must be a positive number, got ${raw}`);
  return v;
}

const SECONDS = positive('seconds', args.seconds);
const WARMUP_S = Number(args.warmup ?? '0.5');
const REPS = Math.round(positive('reps', args.reps));
const CONCURRENCY = (args.concurrency ?? '').split(',').map((s) => Math.round(positive('concurrency', s)));
const RATE = positive('rate', args.rate);
const RATE_SECONDS = positive('rate-seconds', args['rate-seconds']);
const MAX_OUTSTANDING = Math.round(positive('max-outstanding', args['max-outstanding']));
/**
 * timer: wake every ~1 ms (setTimeout) and start every op that is due, so arrivals come in small
 * bursts (about rate/1000 per tick) and the process idles in between, like a real gateway.
 * spin: re-check on every event-loop turn (setImmediate), exact spacing but one core kept busy,
 * which on a shared 2-core VM competes with redis-server itself.
 */
const PACER = args.pacer === 'spin' ? 'spin' : 'timer';
if (args.pacer !== 'spin' && args.pacer !== 'timer') throw new RangeError('--pacer must be timer or spin');
const RATE_ONLY = args['rate-only'] === true;

/** Clients of all three contenders get the options the dam asks for its admission connection. */
const CLIENT_OPTIONS: RedisOptions = {
  host: '127.0.0.1',
  enableOfflineQueue: false,
  autoResendUnfulfilledCommands: false,
  maxRetriesPerRequest: 0,
};

// ---------------------------------------------------------------------------------------------
// Latency samples: every sample up to a cap, then reservoir sampling (max is always exact).

class Samples {
  private readonly a: Float64Array;
  private n = 0;
  count = 0;
  max = 0;
  constructor(private readonly cap = 1_000_000) {
    this.a = new Float64Array(cap);
  }
  add(ms: number): void {
    this.count++;
    if (ms > this.max) this.max = ms;
    if (this.n < this.cap) this.a[this.n++] = ms;
    else {
      const j = Math.floor(Math.random() * this.count);
      if (j < this.cap) this.a[j] = ms;
    }
  }
  summary(): { p50: number; p99: number; p999: number; max: number } {
    const s = this.a.slice(0, this.n).sort();
    const q = (p: number): number => (s.length === 0 ? NaN : s[Math.min(s.length - 1, Math.ceil(p * s.length) - 1)]);
    return { p50: q(0.5), p99: q(0.99), p999: q(0.999), max: this.max };
  }
}

// ---------------------------------------------------------------------------------------------
// redis-server child process

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr !== null ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

let redisChild: ChildProcess | null = null;

async function startRedis(): Promise<number> {
  const port = await freePort();
  const child = spawn(
    'redis-server',
    ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', tmpdir()],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  redisChild = child;
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  let exited = false;
  child.once('exit', () => (exited = true));
  child.once('error', (err) => {
    exited = true;
    stderr += String(err);
  });
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    if (exited) throw new Error(`redis-server exited: ${stderr}`);
    const probe = new Redis({ host: '127.0.0.1', port, lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
    probe.on('error', () => undefined);
    try {
      await probe.connect();
      if ((await probe.ping()) === 'PONG') return port;
    } catch {
      // not up yet
    } finally {
      probe.disconnect();
    }
    await sleep(50);
  }
  throw new Error(`redis-server did not answer on ${port} within 10 s`);
}

async function stopRedis(): Promise<void> {
  const child = redisChild;
  redisChild = null;
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const gone = new Promise<void>((r) => child.once('exit', () => r()));
  child.kill('SIGTERM');
  const killer = setTimeout(() => child.kill('SIGKILL'), 3_000);
  await gone;
  clearTimeout(killer);
}

for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.once(sig, () => {
    redisChild?.kill('SIGKILL');
    process.exit(130);
  });
}
process.once('exit', () => redisChild?.kill('SIGKILL'));

async function connect(port: number, name: string): Promise<Redis> {
  const client = new Redis({ ...CLIENT_OPTIONS, port, connectionName: name });
  client.on('error', (err: Error) => {
    abort(`redis client ${name}: ${err.message}`);
  });
  if (client.status !== 'ready') await new Promise<void>((resolve) => client.once('ready', () => resolve()));
  return client;
}

/** Commands this client wrote on its socket (EVALSHA and a NOSCRIPT re-send count one each). */
function countSent(client: Redis): { n: number } {
  const counter = { n: 0 };
  const orig = client.sendCommand.bind(client);
  client.sendCommand = ((...a: Parameters<Redis['sendCommand']>) => {
    counter.n++;
    return orig(...a);
  }) as Redis['sendCommand'];
  return counter;
}

// ---------------------------------------------------------------------------------------------
// Server-side counters

interface ServerStats {
  calls: Map<string, number>;
  usec: Map<string, number>;
  cpu: number;
}

async function serverStats(admin: Redis): Promise<ServerStats> {
  const text = await admin.info('all');
  const calls = new Map<string, number>();
  const usec = new Map<string, number>();
  let cpu = 0;
  for (const line of text.split('\r\n')) {
    const m = /^cmdstat_([^:]+):calls=(\d+),usec=(\d+)/.exec(line);
    if (m) {
      calls.set(m[1], Number(m[2]));
      usec.set(m[1], Number(m[3]));
    }
    const c = /^used_cpu_(sys|user):([\d.]+)/.exec(line);
    if (c) cpu += Number(c[2]);
  }
  return { calls, usec, cpu };
}

/** Commands a client can send on the wire here; inside Lua the scripts never call these (see BENCHMARKS.md). */
const WIRE_COMMANDS = new Set(['evalsha', 'eval', 'zrem', 'multi', 'exec', 'ping', 'script']);

function diffStats(a: ServerStats, b: ServerStats): { wire: Record<string, number>; all: number; cpuSec: number } {
  const wire: Record<string, number> = {};
  let all = 0;
  for (const [cmd, n] of b.calls) {
    if (cmd === 'info' || cmd === 'client|setname' || cmd === 'select') continue;
    const d = n - (a.calls.get(cmd) ?? 0);
    if (d <= 0) continue;
    all += d;
    if (WIRE_COMMANDS.has(cmd)) wire[cmd] = d;
  }
  return { wire, all, cpuSec: b.cpu - a.cpu };
}

// ---------------------------------------------------------------------------------------------
// Contenders

type ContenderName = 'dam' | 'redis-semaphore' | 'rlf';
const ALL_CONTENDERS: ContenderName[] = ['dam', 'redis-semaphore', 'rlf'];
const CONTENDERS: ContenderName[] = (args.contenders ?? '').split(',').map((name) => {
  const found = ALL_CONTENDERS.find((c) => c === name.trim());
  if (!found) throw new RangeError(`--contenders: unknown ${name}; known: ${ALL_CONTENDERS.join(', ')}`);
  return found;
});

/** An acquisition: how long it took, and the release it started (reply not yet awaited). */
interface Once {
  acquiredMs: number;
  released: Promise<void>;
}

interface Contender {
  name: ContenderName;
  /** Acquires one slot, then starts its release. */
  once(): Promise<Once>;
  /** One operation: acquire one slot, then release it, both replies awaited. */
  op(): Promise<void>;
  sent: { n: number };
}

function contender(name: ContenderName, once: () => Promise<Once>, sent: { n: number }): Contender {
  const op = async (): Promise<void> => {
    const { released } = await once();
    await released;
  };
  return { name, once, op, sent };
}

let abortReason: string | null = null;
function abort(reason: string): void {
  abortReason ??= reason;
}

async function makeDam(port: number): Promise<{ c: Contender; dam: Dam; client: Redis }> {
  const client = await connect(port, 'bench-dam');
  const dam = new Dam({
    redis: client,
    instanceId: 'bench',
    slotsPerInstance: 1_000_000,
    heartbeatMs: 1000,
    heartbeatTtlMs: 3000,
    redisTimeoutMs: 1000,
    onEvent: (e: DamEvent) => {
      if (e.type === 'fallback_entered' || e.type === 'heartbeat_failed' || e.type === 'fenced') abort(`dam event ${JSON.stringify(e)}`);
    },
  });
  const sent = countSent(client);
  await dam.start();
  if (dam.inFallback) throw new Error('dam started in fallback');

  /** Admits, then releases; returns the admit's duration and the release reply to await. */
  const once = async (): Promise<Once> => {
    const t0 = performance.now();
    const r = await dam.admit();
    const admitted = performance.now();
    if (!r.admitted) throw new Error(`dam refused: ${r.reason}`);
    if (r.fallback) throw new Error('dam admitted in fallback: the figure would be invalid');
    r.lease.release();
    const p = r.lease.confirmation;
    if (p === null) throw new Error('lease.release() sent nothing to Redis (fallback or unregistered)');
    const released = p.then((reply) => {
      if (reply !== 'ok') throw new Error(`dam release replied ${String(reply)}`);
    });
    return { acquiredMs: admitted - t0, released };
  };
  return { c: contender('dam', once, sent), dam, client };
}

async function makeSemaphore(port: number): Promise<{ c: Contender; client: Redis }> {
  const client = await connect(port, 'bench-semaphore');
  const sent = countSent(client);
  const once = async (): Promise<Once> => {
    const t0 = performance.now();
    // One Lock object per acquisition (a Lock holds one identifier). refreshInterval 0: no
    // per-lock refresh timer, like the dam's leases (its liveness is the instance heartbeat).
    const s = new Semaphore(client, 'bench', 1_000_000, {
      lockTimeout: 30_000,
      acquireTimeout: 1_000,
      acquireAttemptsLimit: 1,
      retryInterval: 10,
      refreshInterval: 0,
    });
    await s.acquire();
    const acquiredMs = performance.now() - t0;
    return { acquiredMs, released: s.release() };
  };
  return { c: contender('redis-semaphore', once, sent), client };
}

async function makeRlf(port: number): Promise<{ c: Contender; client: Redis }> {
  const client = await connect(port, 'bench-rlf');
  const sent = countSent(client);
  const limiter = new RateLimiterRedis({ storeClient: client, keyPrefix: 'bench-rlf', points: 1_000_000_000, duration: 60 });
  const once = async (): Promise<Once> => {
    const t0 = performance.now();
    await limiter.consume('bench', 1);
    const acquiredMs = performance.now() - t0;
    return { acquiredMs, released: limiter.reward('bench', 1).then(() => undefined) };
  };
  return { c: contender('rlf', once, sent), client };
}

// ---------------------------------------------------------------------------------------------
// Closed-model run

interface RunResult {
  contender: ContenderName;
  concurrency: number;
  rep: number;
  ops: number;
  seconds: number;
  opsPerSec: number;
  p50: number;
  p99: number;
  p999: number;
  max: number;
  /** Commands written by the client per op (round trips; all replies are awaited). */
  clientCmdsPerOp: number;
  /** Wire commands seen by Redis per op, by name. */
  serverWirePerOp: Record<string, number>;
  /** Every command Redis executed per op, including those called inside Lua. */
  serverAllPerOp: number;
  /** Redis server CPU (user + sys) per op, in microseconds. */
  redisCpuUsPerOp: number;
  /** This (client) process's CPU (user + sys) per op, in microseconds. */
  clientCpuUsPerOp: number;
}

async function loops(c: Contender, n: number, untilMs: number, samples: Samples | null): Promise<number> {
  let ops = 0;
  const one = async (): Promise<void> => {
    while (performance.now() < untilMs) {
      if (abortReason) throw new Error(`aborted: ${abortReason}`);
      const t0 = performance.now();
      await c.op();
      samples?.add(performance.now() - t0);
      ops++;
    }
  };
  await Promise.all(Array.from({ length: n }, () => one()));
  return ops;
}

async function closedRun(c: Contender, n: number, rep: number, admin: Redis): Promise<RunResult> {
  if (WARMUP_S > 0) await loops(c, n, performance.now() + WARMUP_S * 1000, null);
  const samples = new Samples();
  const before = await serverStats(admin);
  const sentBefore = c.sent.n;
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const ops = await loops(c, n, t0 + SECONDS * 1000, samples);
  const elapsed = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  const sent = c.sent.n - sentBefore;
  const after = await serverStats(admin);
  const d = diffStats(before, after);
  const s = samples.summary();
  const wire: Record<string, number> = {};
  for (const [k, v] of Object.entries(d.wire)) wire[k] = round(v / ops, 4);
  return {
    contender: c.name,
    concurrency: n,
    rep,
    ops,
    seconds: round(elapsed, 3),
    opsPerSec: Math.round(ops / elapsed),
    p50: round(s.p50, 3),
    p99: round(s.p99, 3),
    p999: round(s.p999, 3),
    max: round(s.max, 3),
    clientCmdsPerOp: round(sent / ops, 4),
    serverWirePerOp: wire,
    serverAllPerOp: round(d.all / ops, 3),
    redisCpuUsPerOp: round((d.cpuSec * 1e6) / ops, 2),
    clientCpuUsPerOp: round((cpu.user + cpu.system) / ops, 2),
  };
}

// ---------------------------------------------------------------------------------------------
// Open-model run: the dam at a fixed rate (the target), then the others at the same rate

type Pct = { p50: number; p99: number; p999: number; max: number };

interface RateResult {
  contender: ContenderName;
  targetPerSec: number;
  seconds: number;
  scheduled: number;
  completed: number;
  skippedOverOutstanding: number;
  achievedPerSec: number;
  maxOutstanding: number;
  /** Acquire (admit) latency from the op's scheduled start (includes any lateness of the pacer). */
  acquireFromSchedule: Pct;
  /** Acquire latency from the moment the call was made. */
  acquireFromCall: Pct;
  /** Acquire + awaited release reply, from the scheduled start. */
  acquireReleaseFromSchedule: Pct;
  pacer: 'timer' | 'spin';
  pacerLateP99: number;
  /** Event-loop delay of this process during the run (perf_hooks, 1 ms resolution). */
  eventLoopDelayP99: number;
  eventLoopDelayMax: number;
  /** Redis' own execution time per wire command (EVALSHA, EVAL, ZREM) during the run, from INFO commandstats. */
  redisUsecPerWireCmd: number;
  clientCmdsPerOp: number;
}

async function fixedRate(c: Contender, ratePerSec: number, seconds: number, admin: Redis): Promise<RateResult> {
  const before = await serverStats(admin);
  const eld = monitorEventLoopDelay({ resolution: 1 });
  eld.enable();
  const interval = 1000 / ratePerSec;
  const total = Math.round(ratePerSec * seconds);
  const fromSchedule = new Samples(total);
  const fromCall = new Samples(total);
  const whole = new Samples(total);
  const late = new Samples(total);
  let outstanding = 0;
  let peak = 0;
  let skipped = 0;
  let completed = 0;
  let failure: unknown = null;
  const sentBefore = c.sent.n;
  const start = performance.now() + 5;

  const launch = (scheduled: number): void => {
    outstanding++;
    if (outstanding > peak) peak = outstanding;
    const callAt = performance.now();
    late.add(callAt - scheduled);
    c.once()
      .then(async ({ acquiredMs, released }) => {
        fromSchedule.add(callAt + acquiredMs - scheduled);
        fromCall.add(acquiredMs);
        await released;
        whole.add(performance.now() - scheduled);
        completed++;
      })
      .catch((err: unknown) => {
        failure ??= err;
      })
      .finally(() => {
        outstanding--;
      });
  };

  await new Promise<void>((resolve) => {
    let next = 0;
    const tick = (): void => {
      if (failure !== null || abortReason) return resolve();
      const now = performance.now();
      while (next < total && start + next * interval <= now) {
        if (outstanding >= MAX_OUTSTANDING) skipped++;
        else launch(start + next * interval);
        next++;
      }
      if (next >= total) return resolve();
      if (PACER === 'spin') setImmediate(tick);
      else setTimeout(tick, 1);
    };
    setTimeout(tick, 5);
  });
  while (outstanding > 0 && failure === null) await sleep(1);
  eld.disable();
  const after = await serverStats(admin);
  if (failure !== null) throw failure instanceof Error ? failure : new Error(String(failure));
  if (abortReason) throw new Error(`aborted: ${abortReason}`);
  const pct = (x: Samples): Pct => {
    const s = x.summary();
    return { p50: round(s.p50, 3), p99: round(s.p99, 3), p999: round(s.p999, 3), max: round(s.max, 3) };
  };
  let usec = 0;
  let calls = 0;
  for (const cmd of ['evalsha', 'eval', 'zrem']) {
    usec += (after.usec.get(cmd) ?? 0) - (before.usec.get(cmd) ?? 0);
    calls += (after.calls.get(cmd) ?? 0) - (before.calls.get(cmd) ?? 0);
  }
  return {
    contender: c.name,
    targetPerSec: ratePerSec,
    seconds,
    scheduled: total,
    completed,
    skippedOverOutstanding: skipped,
    achievedPerSec: Math.round(completed / seconds),
    maxOutstanding: peak,
    acquireFromSchedule: pct(fromSchedule),
    acquireFromCall: pct(fromCall),
    acquireReleaseFromSchedule: pct(whole),
    pacer: PACER,
    pacerLateP99: round(late.summary().p99, 3),
    eventLoopDelayP99: round(eld.percentile(99) / 1e6, 3),
    eventLoopDelayMax: round(eld.max / 1e6, 3),
    redisUsecPerWireCmd: round(usec / Math.max(1, calls), 2),
    clientCmdsPerOp: round((c.sent.n - sentBefore) / Math.max(1, completed), 4),
  };
}

// ---------------------------------------------------------------------------------------------
// Reporting

function round(v: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(v * f) / f;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

interface Summary {
  contender: ContenderName;
  concurrency: number;
  opsPerSec: number;
  opsPerSecRuns: number[];
  p50: number;
  p99: number;
  max: number;
  clientCmdsPerOp: number;
  serverWirePerOp: Record<string, number>;
  serverAllPerOp: number;
  redisCpuUsPerOp: number;
  clientCpuUsPerOp: number;
}

function summarize(runs: RunResult[]): Summary[] {
  const out: Summary[] = [];
  for (const n of CONCURRENCY) {
    for (const name of CONTENDERS) {
      const rs = runs.filter((r) => r.concurrency === n && r.contender === name);
      if (rs.length === 0) continue;
      const wire: Record<string, number> = {};
      for (const k of new Set(rs.flatMap((r) => Object.keys(r.serverWirePerOp)))) {
        wire[k] = round(median(rs.map((r) => r.serverWirePerOp[k] ?? 0)), 3);
      }
      out.push({
        contender: name,
        concurrency: n,
        opsPerSec: Math.round(median(rs.map((r) => r.opsPerSec))),
        opsPerSecRuns: rs.map((r) => r.opsPerSec),
        p50: round(median(rs.map((r) => r.p50)), 3),
        p99: round(median(rs.map((r) => r.p99)), 3),
        max: round(Math.max(...rs.map((r) => r.max)), 3),
        clientCmdsPerOp: round(median(rs.map((r) => r.clientCmdsPerOp)), 3),
        serverWirePerOp: wire,
        serverAllPerOp: round(median(rs.map((r) => r.serverAllPerOp)), 2),
        redisCpuUsPerOp: round(median(rs.map((r) => r.redisCpuUsPerOp)), 1),
        clientCpuUsPerOp: round(median(rs.map((r) => r.clientCpuUsPerOp)), 1),
      });
    }
  }
  return out;
}

interface Ratio {
  concurrency: number;
  vs: ContenderName;
  perRep: number[];
  medianOfRatios: number;
  ratioOfMedians: number;
}

function ratios(runs: RunResult[], summaries: Summary[]): Ratio[] {
  const out: Ratio[] = [];
  for (const n of CONCURRENCY) {
    for (const vs of ['redis-semaphore', 'rlf'] as const) {
      const perRep: number[] = [];
      for (let rep = 0; rep < REPS; rep++) {
        const d = runs.find((r) => r.concurrency === n && r.rep === rep && r.contender === 'dam');
        const o = runs.find((r) => r.concurrency === n && r.rep === rep && r.contender === vs);
        if (d && o) perRep.push(round(d.opsPerSec / o.opsPerSec, 2));
      }
      const d = summaries.find((s) => s.concurrency === n && s.contender === 'dam');
      const o = summaries.find((s) => s.concurrency === n && s.contender === vs);
      if (!d || !o || perRep.length === 0) continue;
      out.push({ concurrency: n, vs, perRep, medianOfRatios: round(median(perRep), 2), ratioOfMedians: round(d.opsPerSec / o.opsPerSec, 2) });
    }
  }
  return out;
}

const fmt = (v: number, d = 3): string => v.toFixed(d);
const int = (v: number): string => v.toLocaleString('en-US');

function markdown(summaries: Summary[], rs: Ratio[], rates: RateResult[]): string {
  const lines: string[] = [];
  lines.push(
    `Closed model, ${SECONDS} s per run after ${WARMUP_S} s warm-up, median of ${REPS} runs per cell (contenders alternate).`,
    'One op = acquire one slot + release it, both replies awaited.',
    '',
    '| concurrency | contender | ops/s (median) | ops/s runs | p50 ms | p99 ms | max ms | round trips/op | Redis cmds/op incl. Lua | Redis CPU µs/op | client CPU µs/op |',
    '|---:|---|---:|---|---:|---:|---:|---:|---:|---:|---:|',
  );
  for (const s of summaries) {
    lines.push(
      `| ${s.concurrency} | ${s.contender} | ${int(s.opsPerSec)} | ${s.opsPerSecRuns.map(int).join(' / ')} | ${fmt(s.p50)} | ${fmt(s.p99)} | ${fmt(s.max)} | ${fmt(s.clientCmdsPerOp)} | ${fmt(s.serverAllPerOp, 2)} | ${fmt(s.redisCpuUsPerOp, 1)} | ${fmt(s.clientCpuUsPerOp, 1)} |`,
    );
  }
  lines.push('', '| concurrency | dam ÷ | per run (side by side) | median of ratios | ratio of medians |', '|---:|---|---|---:|---:|');
  for (const r of rs) lines.push(`| ${r.concurrency} | ${r.vs} | ${r.perRep.map((x) => fmt(x, 2)).join(' / ')} | ${fmt(r.medianOfRatios, 2)} | ${fmt(r.ratioOfMedians, 2)} |`);
  lines.push('', '| concurrency | contender | wire commands per op seen by Redis (INFO commandstats) |', '|---:|---|---|');
  for (const s of summaries) {
    lines.push(`| ${s.concurrency} | ${s.contender} | ${Object.entries(s.serverWirePerOp).map(([k, v]) => `${k} ${fmt(v, 3)}`).join(', ')} |`);
  }
  if (rates.length > 0) {
    const r0 = rates[0];
    lines.push(
      '',
      `Fixed rate (open model): ${int(r0.targetPerSec)} acquisitions/s for ${r0.seconds} s each after 1 s at the same rate unrecorded; dam first (the target), then the others as reference under the same conditions. Pacer \`${r0.pacer}\`; outstanding cap ${MAX_OUTSTANDING}. Latency "from schedule" counts from when the op was due (no coordinated omission); "from call" from when acquire/admit was called.`,
      '',
      '| contender | completed / scheduled | acquire p50 ms (schedule / call) | acquire p99 ms (schedule / call) | acquire p99.9 ms (schedule) | acquire max ms (schedule) | + release p99 ms (schedule) | pacer late p99 ms | event-loop delay p99 / max ms | Redis µs per wire cmd |',
      '|---|---|---|---|---:|---:|---:|---:|---|---:|',
    );
    for (const r of rates) {
      lines.push(
        `| ${r.contender} | ${int(r.completed)} / ${int(r.scheduled)}${r.skippedOverOutstanding ? ` (${r.skippedOverOutstanding} skipped)` : ''} | ${fmt(r.acquireFromSchedule.p50)} / ${fmt(r.acquireFromCall.p50)} | ${fmt(r.acquireFromSchedule.p99)} / ${fmt(r.acquireFromCall.p99)} | ${fmt(r.acquireFromSchedule.p999)} | ${fmt(r.acquireFromSchedule.max)} | ${fmt(r.acquireReleaseFromSchedule.p99)} | ${fmt(r.pacerLateP99)} | ${fmt(r.eventLoopDelayP99)} / ${fmt(r.eventLoopDelayMax)} | ${fmt(r.redisUsecPerWireCmd, 1)} |`,
      );
    }
  }
  return lines.join('\n');
}

// ---------------------------------------------------------------------------------------------

async function main(): Promise<void> {
  const startedAt = new Date();
  const loadBefore = loadavg().map((x) => round(x, 2));
  const t0 = performance.now();
  const port = await startRedis();
  const clients: Redis[] = [];
  let dam: Dam | null = null;
  try {
    const admin = await connect(port, 'bench-admin');
    clients.push(admin);
    const redisVersion = /redis_version:(\S+)/.exec(await admin.info('server'))?.[1] ?? '?';
    const d = await makeDam(port);
    dam = d.dam;
    clients.push(d.client);
    const sem = await makeSemaphore(port);
    clients.push(sem.client);
    const rlf = await makeRlf(port);
    clients.push(rlf.client);
    const byName: Record<ContenderName, Contender> = { dam: d.c, 'redis-semaphore': sem.c, rlf: rlf.c };

    // Load scripts, settle the JIT.
    for (const name of CONTENDERS) await loops(byName[name], 16, performance.now() + 1000, null);

    const runs: RunResult[] = [];
    for (const n of RATE_ONLY ? [] : CONCURRENCY) {
      for (let rep = 0; rep < REPS; rep++) {
        // Rotate the order each repetition so no contender always runs first or last.
        const order = CONTENDERS.map((_, i) => CONTENDERS[(i + rep) % CONTENDERS.length]);
        for (const name of order) {
          const r = await closedRun(byName[name], n, rep, admin);
          runs.push(r);
          process.stderr.write(
            `c=${n} rep=${rep} ${name.padEnd(15)} ${String(r.opsPerSec).padStart(7)} ops/s  p50 ${fmt(r.p50)}  p99 ${fmt(r.p99)}  max ${fmt(r.max)} ms  rt/op ${fmt(r.clientCmdsPerOp)}\n`,
          );
        }
      }
    }

    // Open model: warm-up at the target rate (not recorded), then the measured window.
    const rates: RateResult[] = [];
    for (const name of CONTENDERS) {
      await fixedRate(byName[name], RATE, Math.min(1, RATE_SECONDS), admin);
      const r = await fixedRate(byName[name], RATE, RATE_SECONDS, admin);
      rates.push(r);
      process.stderr.write(
        `rate ${RATE}/s ${name.padEnd(15)} acquire p50 ${fmt(r.acquireFromSchedule.p50)} p99 ${fmt(r.acquireFromSchedule.p99)} ms (from call p99 ${fmt(r.acquireFromCall.p99)}), event-loop delay p99 ${fmt(r.eventLoopDelayP99)} ms\n`,
      );
    }

    const summaries = summarize(runs);
    const rs = ratios(runs, summaries);
    const loadAfter = loadavg().map((x) => round(x, 2));
    const table = markdown(summaries, rs, rates);
    process.stdout.write(`${table}\n\nLoad average (1/5/15 min) before ${loadBefore.join(' ')}, after ${loadAfter.join(' ')}.\n`);

    if (!args['no-json']) {
      const dir = join(__dirname, 'results');
      mkdirSync(dir, { recursive: true });
      const file = args.out ?? join(dir, `admit-${startedAt.toISOString().slice(0, 10)}.json`);
      const result = {
        date: startedAt.toISOString(),
        command: `node --import tsx libs/dam/bench/admit.bench.ts ${process.argv.slice(2).join(' ')}`.trim(),
        machine: {
          cpus: cpus().length,
          cpuModel: cpus()[0]?.model ?? '?',
          memGiB: round(totalmem() / 2 ** 30, 1),
          kernel: kernelRelease(),
          node: process.version,
          redis: redisVersion,
          loadAvgBefore: loadBefore,
          loadAvgAfter: loadAfter,
        },
        settings: { pacer: PACER, seconds: SECONDS, warmupSeconds: WARMUP_S, reps: REPS, concurrency: CONCURRENCY, rate: RATE, rateSeconds: RATE_SECONDS, maxOutstanding: MAX_OUTSTANDING },
        summaries,
        ratios: rs,
        fixedRate: rates,
        runs: runs.map(({ contender, concurrency, rep, ops, opsPerSec, p50, p99, max, clientCmdsPerOp }) => ({ contender, concurrency, rep, ops, opsPerSec, p50, p99, max, clientCmdsPerOp })),
        totalSeconds: round((performance.now() - t0) / 1000, 1),
      };
      writeFileSync(file, `${JSON.stringify(result, null, 1)}\n`);
      process.stderr.write(`wrote ${file} (${result.totalSeconds} s total)\n`);
    }
  } finally {
    if (dam) await dam.stop().catch(() => undefined);
    for (const c of clients) c.disconnect();
    await stopRedis();
  }
}

main().then(
  () => {
    // Nothing should linger; make sure the bench ends by itself regardless.
    setTimeout(() => process.exit(process.exitCode ?? 0), 2_000).unref();
  },
  (err: unknown) => {
    process.stderr.write(`bench failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    redisChild?.kill('SIGKILL');
    process.exit(1);
  },
);
