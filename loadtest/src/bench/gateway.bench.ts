/**
 * The gateway's request path, measured black-box against a bare node:http server doing the same
 * work, side by side in one run (issue 17). Every process is started here on free loopback
 * ports (one Redis, the built gateway, the benchmark's worker, the bare server, nginx) and
 * stopped at the end, also on error or Ctrl-C.
 *
 *   npm run bench:gateway [-- --quick] [--only dam_full,ai_overloaded,stream_open,question_accepted,streaming,idle,edge]
 *
 * Phases (each gateway process fresh, with the product's defaults unless the phase needs one
 * setting; Redis flushed between phases):
 *   dam_full           429 on GET /chat/stream with the budget full (DAM_SLOTS_PER_INSTANCE=2, two streams held)
 *   ai_overloaded      503 on POST: the worker heartbeats 1 answer/s and never reads, the AI gate refuses
 *   stream_open        GET /chat/stream to the `session` event, each on a new connection, then closed
 *   question_accepted  POST -> 202; the worker answers at once, a session asks again after its `done`
 *   streaming          N streams x R tokens/s from the worker through Redis to the clients
 *   idle               N idle open sessions on one process: RSS per session, event-loop lag p99
 *   edge               nginx CPU per new connection: plain HTTP, TLS full handshake, TLS resumed
 */
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { BenchContext, log, type BenchOptions } from './bench-context';
import { edge } from './edge-phase';
import { machineInfo } from './proc';
import { renderMarkdown, type BenchResult } from './report';
import { aiOverloaded, damFull, questionAccepted, streamOpen } from './request-phases';
import { idle, streaming } from './stream-phases';

const PHASES = ['dam_full', 'ai_overloaded', 'stream_open', 'question_accepted', 'streaming', 'idle', 'edge'] as const;
type PhaseId = (typeof PHASES)[number];

const HELP = `npm run bench:gateway [-- options]

Measures one gateway process beside a bare node:http server doing the same work, in one run:
refusals (429 dam_full, 503 ai_overloaded), stream open to the session event, question accepted
(202), the streaming path, idle sessions (RSS, event-loop lag), and nginx's CPU per new
connection with and without TLS session resumption. Loopback only; every process it starts is
stopped at the end or on Ctrl-C. About 5 minutes with the defaults, 1.5 with --quick.

  --seconds N          measured window of each request phase (default 10)
  --warmup N           warm-up before each window, not counted (default 2)
  --connections N      autocannon connections for the refusals (default 50)
  --concurrency N      closed loops for stream opens and questions (default 32)
  --streams N          concurrent streams in the streaming phase (default 1000)
  --tokens-per-sec R   tokens per second per stream (default 50)
  --batch-ms N         the worker's reply window in the streaming phase (default 10, as the
                       worker's WORKER_REPLY_BATCH_MS; 0: one message per reply, the previous protocol)
  --stream-seconds N   measured window of the streaming phase (default 10, at most 25)
  --idle-sessions N    idle sessions held on one process (default 10000)
  --idle-hold N        seconds they are held, sampling lag each second (default 20: one 15 s ping)
  --edge-seconds N     measured window per connection kind at the edge (default 5)
  --reps N             request phases: gateway and bare measured in turn N times, median kept (default 1)
  --only LIST          only these phases: ${PHASES.join(',')}
  --env KEY=VALUE      extra gateway setting (repeatable), e.g. --env LOG_LEVEL=warn
  --quick              a short check that it all runs: 2 s windows, 200 streams, 1,000 idle sessions
  --out FILE           JSON results (default loadtest/results/bench-gateway-<time>.json; .md beside)
  --keep-logs          keep the processes' logs (printed at the end)
`;

function positive(name: string, raw: string | undefined, def: number, max = 1e9): number {
  if (raw === undefined) return def;
  const n = Number(raw);
  if (!Number.isFinite(n) || n <= 0 || n > max) {
    process.stderr.write(`--${name} must be a number above 0 and at most ${max}, got ${JSON.stringify(raw)}\n`);
    process.exit(2);
  }
  return n;
}

const { values } = parseArgs({
  options: {
    seconds: { type: 'string' },
    warmup: { type: 'string' },
    connections: { type: 'string' },
    concurrency: { type: 'string' },
    streams: { type: 'string' },
    'tokens-per-sec': { type: 'string' },
    'batch-ms': { type: 'string' },
    'stream-seconds': { type: 'string' },
    'idle-sessions': { type: 'string' },
    'idle-hold': { type: 'string' },
    'edge-seconds': { type: 'string' },
    reps: { type: 'string' },
    only: { type: 'string' },
    env: { type: 'string', multiple: true },
    quick: { type: 'boolean', default: false },
    out: { type: 'string' },
    'keep-logs': { type: 'boolean', default: false },
    help: { type: 'boolean', default: false },
  },
});
if (values.help) {
  process.stdout.write(HELP);
  process.exit(0);
}
const quick = values.quick === true;
const opt: BenchOptions = {
  seconds: positive('seconds', values.seconds, quick ? 2 : 10, 600),
  warmupMs: positive('warmup', values.warmup, quick ? 1 : 2, 60) * 1_000,
  connections: Math.round(positive('connections', values.connections, 50, 10_000)),
  concurrency: Math.round(positive('concurrency', values.concurrency, 32, 1_000)),
  streams: Math.round(positive('streams', values.streams, quick ? 200 : 1_000, 20_000)),
  tokensPerSec: positive('tokens-per-sec', values['tokens-per-sec'], 50, 1_000),
  batchMs: values['batch-ms'] === '0' ? 0 : positive('batch-ms', values['batch-ms'], 10, 1_000),
  streamSeconds: positive('stream-seconds', values['stream-seconds'], quick ? 2 : 10, 25),
  idleSessions: Math.round(positive('idle-sessions', values['idle-sessions'], quick ? 1_000 : 10_000, 18_000)),
  idleHold: Math.round(positive('idle-hold', values['idle-hold'], quick ? 4 : 20, 110)),
  edgeSeconds: positive('edge-seconds', values['edge-seconds'], quick ? 2 : 5, 600),
  reps: Math.round(positive('reps', values.reps, 1, 20)),
};
const only = values.only?.split(',').map((s) => s.trim()).filter(Boolean);
for (const p of only ?? []) {
  if (!(PHASES as readonly string[]).includes(p)) {
    process.stderr.write(`--only: unknown phase ${p}; known: ${PHASES.join(', ')}\n`);
    process.exit(2);
  }
}
const gatewayEnv: Record<string, string> = {};
for (const kv of values.env ?? []) {
  const m = /^([A-Z][A-Z0-9_]*)=(.*)$/.exec(kv);
  if (!m) {
    process.stderr.write(`--env wants KEY=VALUE, got ${JSON.stringify(kv)}\n`);
    process.exit(2);
  }
  gatewayEnv[m[1] as string] = m[2] as string;
}
const runs = (p: PhaseId): boolean => !only || only.includes(p);

// nginx and redis-server live in /usr/sbin and /usr/bin on Debian.
process.env['PATH'] = `${process.env['PATH'] ?? ''}:/usr/sbin`;
// The environment of the benchmark itself must not configure the gateways (npm start's rule is
// the opposite): only --env does.
for (const k of Object.keys(process.env)) if (/^(DAM_|AI_|SSE_|QUESTION_|AUTH_|LOG_LEVEL$|GATEWAY_WORKERS$)/.test(k)) delete process.env[k];

async function main(): Promise<void> {
  const started = Date.now();
  const machine = machineInfo();
  const command = `npm run bench:gateway${process.argv.length > 2 ? ` -- ${process.argv.slice(2).join(' ')}` : ''}`;
  const dir = mkdtempSync(join(tmpdir(), 'td-bench-gateway-'));
  const bench = new BenchContext(dir, opt, gatewayEnv);
  let stopping = false;
  // First signal: stop every process (the phase running fails at once), write what was measured.
  // Second: exit now; ManagedChild kills what is left as this process exits.
  const onSignal = (sig: string): void => {
    if (stopping) process.exit(130);
    stopping = true;
    log(`\n${sig}: stopping every process the benchmark started (again to quit at once)...`);
    void bench.stop();
  };
  process.on('SIGINT', () => onSignal('SIGINT'));
  process.on('SIGTERM', () => onSignal('SIGTERM'));
  log(`bench:gateway: ${machine.nproc} CPUs (${machine.cpuModel}), load average ${machine.loadavg.join(' / ')}, logs in ${dir}`);
  const result: BenchResult = {
    command,
    machine,
    loadavgAfter: [],
    finishedAt: '',
    durationSec: 0,
    options: { ...opt, only: only ?? PHASES, env: gatewayEnv },
    requests: [],
    notes: bench.notes,
  };
  let failed = false;
  try {
    await bench.start();
    const step = async <T>(id: PhaseId, f: () => Promise<T>, keep: (v: T) => void): Promise<void> => {
      if (!runs(id) || stopping) return;
      log(`-- ${id}`);
      try {
        keep(await f());
      } catch (err) {
        if (stopping) {
          bench.notes.push(`${id}: interrupted`);
          return;
        }
        failed = true;
        const msg = err instanceof Error ? err.message : String(err);
        bench.notes.push(`${id} failed: ${msg}`);
        log(`   ${id} failed: ${msg}`);
      }
    };
    await step('dam_full', () => damFull(bench), (r) => result.requests.push(r));
    await step('ai_overloaded', () => aiOverloaded(bench), (r) => result.requests.push(r));
    await step('stream_open', () => streamOpen(bench), (r) => result.requests.push(r));
    await step('question_accepted', () => questionAccepted(bench), (r) => result.requests.push(r));
    await step('streaming', () => streaming(bench), (r) => (result.streaming = r));
    await step('idle', () => idle(bench), (r) => (result.idle = r));
    await step('edge', () => edge(bench), (r) => (result.edge = r));
  } finally {
    await bench.stop();
  }
  result.loadavgAfter = machineInfo().loadavg;
  result.finishedAt = new Date().toISOString();
  result.durationSec = Math.round((Date.now() - started) / 1_000);
  const md = renderMarkdown(result);
  process.stdout.write(`\n${md}`);
  const out = resolve(values.out ?? join('loadtest/results', `bench-gateway-${machine.date.replace(/[:.]/g, '-')}.json`));
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(out, JSON.stringify(result, null, 1));
  writeFileSync(out.replace(/\.json$/, '') + '.md', md);
  log(`results: ${out} (and .md beside it); took ${result.durationSec} s`);
  if (values['keep-logs']) log(`logs kept in ${dir}`);
  else rmSync(dir, { recursive: true, force: true });
  if (stopping) process.exit(130);
  if (failed) process.exit(1);
}

main().catch((err: unknown) => {
  log(err instanceof Error ? (err.stack ?? err.message) : String(err));
  process.exit(1);
});
