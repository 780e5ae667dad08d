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
import http from 'node:http';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import autocannon from 'autocannon';
import { Redis } from 'ioredis';
import { ensureLocalCertificate, type RedisHandle } from '@traffic-dam/stack';
import {
  connectLoop,
  openMany,
  openStream,
  problemCode,
  questionLoop,
  request,
  streamOpenLoop,
  streamingRun,
  type ConnectMode,
  type LoopResult,
  type Response,
  type Window,
} from './clients';
import { Processes, type Server } from './processes';
import { CpuMeter, SelfCpu, childPids, machineInfo, rssBytes, runQueueWaitMicros } from './proc';
import { checkRow, renderMarkdown, type BenchResult, type EdgeRow, type IdleFigures, type PairRow, type ServerFigures, type StreamingFigures } from './report';

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
const opt = {
  seconds: positive('seconds', values.seconds, quick ? 2 : 10, 600),
  warmupMs: positive('warmup', values.warmup, quick ? 1 : 2, 60) * 1_000,
  connections: Math.round(positive('connections', values.connections, 50, 10_000)),
  concurrency: Math.round(positive('concurrency', values.concurrency, 32, 1_000)),
  streams: Math.round(positive('streams', values.streams, quick ? 200 : 1_000, 20_000)),
  tokensPerSec: positive('tokens-per-sec', values['tokens-per-sec'], 50, 1_000),
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

const log = (line: string): void => void process.stderr.write(`${line}\n`);

/**
 * CPU meters over the server, Redis and other processes, and this process (the load generator);
 * and how long the server's event-loop thread waited for a CPU (a busy machine, not the server).
 */
class Meters implements Window {
  private readonly meters: Record<string, CpuMeter>;
  private readonly self = new SelfCpu();
  readonly result: Record<string, { micros: number; coreShare: number }> = {};
  clientCores = NaN;
  /** Share of the window the waited-on process's main thread was runnable but not running. */
  waitShare = NaN;
  private wait0 = NaN;
  private t0 = 0;
  constructor(groups: Record<string, () => Array<number | undefined>>, private readonly waitOf?: number) {
    this.meters = Object.fromEntries(Object.entries(groups).map(([k, pids]) => [k, new CpuMeter(pids)]));
  }
  start(): void {
    for (const m of Object.values(this.meters)) m.start();
    this.self.start();
    this.wait0 = runQueueWaitMicros(this.waitOf);
    this.t0 = performance.now();
  }
  stop(): void {
    for (const [k, m] of Object.entries(this.meters)) this.result[k] = m.stop();
    this.clientCores = this.self.stop();
    this.waitShare = (runQueueWaitMicros(this.waitOf) - this.wait0) / ((performance.now() - this.t0) * 1e3);
  }
  micros(k: string): number {
    return this.result[k]?.micros ?? NaN;
  }
  cores(k: string): number {
    return this.result[k]?.coreShare ?? NaN;
  }
}

/** The response as a bare server replays it: Node sets date, framing and keep-alive itself. */
function captured(res: Response): { status: number; headers: Record<string, string>; body: string } {
  const headers: Record<string, string> = {};
  for (const [k, v] of Object.entries(res.headers)) {
    if (v === undefined || ['date', 'transfer-encoding', 'keep-alive'].includes(k)) continue;
    if (k === 'connection' && String(v).toLowerCase() !== 'close') continue;
    headers[k] = Array.isArray(v) ? v.join(', ') : v;
  }
  return { status: res.status, headers, body: res.body };
}

class Bench {
  readonly procs: Processes;
  /** Captures go over keep-alive, as autocannon's requests do: a `Connection: close` is then the server's own. */
  private readonly keepAlive = new http.Agent({ keepAlive: true, maxSockets: 4 });
  redis!: RedisHandle;
  private admin!: Redis;
  readonly notes: string[] = [];
  /** Stream response headers of the gateway, for the bare server to send the same. */
  private streamHeaders: Record<string, string> | null = null;

  constructor(readonly dir: string) {
    this.procs = new Processes(dir);
  }

  async start(): Promise<void> {
    this.redis = await this.procs.redis();
    this.admin = new Redis(this.redis.url, { maxRetriesPerRequest: 1 });
  }

  async stop(): Promise<void> {
    this.keepAlive.destroy();
    this.admin?.disconnect();
    await this.procs.stopAll();
  }

  /** Redis as new between phases: no dam instance, session, queue or heartbeat of the last one. */
  private async fresh(): Promise<void> {
    await this.admin.flushall();
  }

  private gateway(env: Record<string, string> = {}): Promise<Server> {
    return this.procs.gateway(this.redis.url, { ...gatewayEnv, ...env });
  }

  private meters(server: Server, extra: Record<string, () => Array<number | undefined>> = {}): Meters {
    // The server's whole process tree: GATEWAY_WORKERS > 1 forks its instances.
    const tree = (): Array<number | undefined> => (server.pid ? [server.pid, ...childPids(server.pid)] : []);
    return new Meters({ server: tree, redis: () => [this.redis.child?.pid], ...extra }, server.pid);
  }

  private async streamHeadersOf(gw: Server): Promise<Record<string, string>> {
    if (!this.streamHeaders) {
      const s = await openStream(gw.url);
      s.close();
      if (!s.session) throw new Error(`the gateway refused a stream: ${s.status} ${s.code ?? ''}`);
      this.streamHeaders = captured({ status: s.status, headers: s.headers, body: '' }).headers;
    }
    return this.streamHeaders;
  }

  /** autocannon against one server: a warm-up, then the measured window with the CPU meters. */
  private async cannon(
    server: Server,
    path: string,
    init: { method: 'GET' | 'POST'; headers: Record<string, string>; body?: string; perConnection?: Array<{ path: string; headers: Record<string, string> }> },
    expected: string,
  ): Promise<ServerFigures> {
    // perConnection: each connection sends its own request (its own session), so no two
    // requests in flight ever share a session.
    const own = init.perConnection;
    let next = 0;
    const setupClient = own
      ? (client: autocannon.Client): void => {
          const r = own[next++ % own.length] as { path: string; headers: Record<string, string> };
          client.setRequests([{ method: init.method, path: r.path, headers: { ...init.headers, ...r.headers }, body: init.body }]);
        }
      : undefined;
    const base = { url: `${server.url}${path}`, connections: opt.connections, pipelining: 1, method: init.method, headers: init.headers, body: init.body, timeout: 10, setupClient };
    await autocannon({ ...base, duration: opt.warmupMs / 1_000 });
    const m = this.meters(server);
    m.start();
    const r = await autocannon({ ...base, duration: opt.seconds });
    m.stop();
    const answered = r['1xx'] + r['2xx'] + r['3xx'] + r['4xx'] + r['5xx'];
    const tally: Record<string, number> = {};
    for (const [status, v] of Object.entries(r.statusCodeStats ?? {})) tally[status] = v.count ?? 0;
    if (r.errors) tally['errors'] = r.errors;
    if (r.timeouts) tally['timeouts'] = r.timeouts;
    return {
      perSec: answered / r.duration,
      latency: { count: answered, p50: r.latency.p50, p90: r.latency.p90, p99: r.latency.p99, max: r.latency.max },
      cpuUsPerOp: m.micros('server') / answered,
      cpuCores: m.cores('server'),
      redisUsPerOp: m.micros('redis') / answered,
      clientCores: m.clientCores,
      serverWaitShare: m.waitShare,
      tally,
      expected,
    };
  }

  private loopFigures(r: LoopResult, m: Meters, expected: string, redisCounts = true): ServerFigures {
    return {
      perSec: r.perSec,
      latency: r.latency,
      cpuUsPerOp: m.micros('server') / r.ops,
      cpuCores: m.cores('server'),
      redisUsPerOp: redisCounts ? m.micros('redis') / r.ops : 0,
      clientCores: m.clientCores,
      serverWaitShare: m.waitShare,
      tally: r.tally,
      expected,
    };
  }

  private check(row: PairRow): void {
    this.notes.push(...checkRow(`${row.id}, gateway`, row.gateway), ...checkRow(`${row.id}, bare`, row.bareFigures));
  }

  /**
   * Measures the gateway and the bare server in turn, `reps` times each (both already running and
   * idle while the other is measured), and keeps each side's median run by throughput, so a
   * burst of load from elsewhere on the machine does not land on one side only.
   */
  private async alternate(row: PairRow, gw: () => Promise<ServerFigures>, bare: () => Promise<ServerFigures>): Promise<void> {
    const g: ServerFigures[] = [];
    const b: ServerFigures[] = [];
    for (let i = 0; i < opt.reps; i++) {
      log(`   gateway${opt.reps > 1 ? `, run ${i + 1} of ${opt.reps}` : ''}`);
      g.push(await gw());
      log(`   bare server${opt.reps > 1 ? `, run ${i + 1} of ${opt.reps}` : ''}`);
      b.push(await bare());
    }
    const median = (runs: ServerFigures[]): ServerFigures => {
      const m = [...runs].sort((x, y) => x.perSec - y.perSec)[Math.floor((runs.length - 1) / 2)] as ServerFigures;
      return runs.length > 1 ? { ...m, runsPerSec: runs.map((r) => r.perSec) } : m;
    };
    row.gateway = median(g);
    row.bareFigures = median(b);
    this.check(row);
  }

  async damFull(): Promise<PairRow> {
    const row: PairRow = {
      id: 'dam_full',
      figure: '429 `dam_full`: GET /chat/stream, budget full',
      bare: "answers every request with the gateway's own 429, captured in this run (status, headers, problem body; a fresh X-Request-Id each)",
    };
    await this.fresh();
    const gw = await this.gateway({ DAM_SLOTS_PER_INSTANCE: '2' });
    const held = await openMany(gw.url, 2, 2);
    let bare: Server | undefined;
    try {
      if (held.streams.length !== 2) throw new Error(`dam_full: could not fill the budget (${JSON.stringify(held.failed)})`);
      const refused = await request(`${gw.url}/chat/stream`, { headers: { accept: 'text/event-stream' }, agent: this.keepAlive });
      if (refused.status !== 429 || problemCode(refused.body) !== 'dam_full') throw new Error(`dam_full: expected 429 dam_full, got ${refused.status} ${refused.body.slice(0, 200)}`);
      bare = await this.procs.bare({ BARE_REFUSAL: JSON.stringify(captured(refused)) });
      log(`   the gateway answers 429 dam_full; autocannon ${opt.connections} connections, ${opt.warmupMs / 1_000} s warm-up + ${opt.seconds} s each`);
      const init = { method: 'GET' as const, headers: { accept: 'text/event-stream' } };
      const b = bare;
      await this.alternate(row, () => this.cannon(gw, '/chat/stream', init, '429'), () => this.cannon(b, '/chat/stream', init, '429'));
      const after = await request(`${gw.url}/chat/stream`, { headers: { accept: 'text/event-stream' } });
      if (problemCode(after.body) !== 'dam_full') this.notes.push(`dam_full: after the windows the gateway answered ${after.status} ${problemCode(after.body)}`);
    } finally {
      for (const st of held.streams) st.close();
      await this.procs.stop(gw.child);
      if (bare) await this.procs.stop(bare.child);
    }
    return row;
  }

  async aiOverloaded(): Promise<PairRow> {
    const row: PairRow = {
      id: 'ai_overloaded',
      figure: '503 `ai_overloaded`: POST a question, AI queue too long',
      bare: "reads the POST body and answers with the gateway's own 503, captured in this run (status, headers, problem body; a fresh X-Request-Id each)",
    };
    await this.fresh();
    // Declares 1 answer/s and never reads: a few questions queue, then the gate's estimated wait
    // (queue / throughput) passes DAM_MAX_QUEUE_WAIT_MS and every question is refused.
    const worker = await this.procs.worker(this.redis.url, { BENCH_WORKER_MODE: 'silent', BENCH_CAPACITY: '1' });
    const gw = await this.gateway();
    // A few questions queue; each connection then asks on its own refused session (a session
    // with a question in flight would answer 409, and two at once on one session collide).
    const opened = await openMany(gw.url, opt.connections + 12, 16);
    let bare: Server | undefined;
    try {
      let refused: Response | undefined;
      const targets: Array<{ sessionId: string; token: string }> = [];
      const seen: Record<string, number> = {};
      const body = JSON.stringify({ question: 'a question the AI has no room for' });
      for (const st of opened.streams) {
        const sess = st.session as { sessionId: string; token: string };
        const res = await request(`${gw.url}/chat/sessions/${sess.sessionId}/messages`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', authorization: `Bearer ${sess.token}` },
          body,
          agent: this.keepAlive,
        });
        const key = `${res.status} ${problemCode(res.body)}`;
        seen[key] = (seen[key] ?? 0) + 1;
        if (res.status === 503 && problemCode(res.body) === 'ai_overloaded') {
          refused ??= res;
          targets.push(sess);
        }
        if (targets.length >= opt.connections) break;
      }
      if (!refused || targets.length < opt.connections) throw new Error(`ai_overloaded: the AI gate refused ${targets.length} sessions, ${opt.connections} needed (${JSON.stringify(seen)})`);
      bare = await this.procs.bare({ BARE_REFUSAL: JSON.stringify(captured(refused)) });
      log(`   the gateway answers 503 ai_overloaded (${JSON.stringify(seen)}); autocannon ${opt.connections} connections, one session each`);
      const init = {
        method: 'POST' as const,
        headers: { 'content-type': 'application/json' },
        body,
        perConnection: targets.map((t) => ({ path: `/chat/sessions/${t.sessionId}/messages`, headers: { authorization: `Bearer ${t.token}` } })),
      };
      const first = targets[0] as { sessionId: string; token: string };
      const path = `/chat/sessions/${first.sessionId}/messages`;
      const b = bare;
      await this.alternate(row, () => this.cannon(gw, path, init, '503'), () => this.cannon(b, path, init, '503'));
      const after = await request(`${gw.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${first.token}` }, body });
      if (problemCode(after.body) !== 'ai_overloaded') this.notes.push(`ai_overloaded: after the windows the gateway answered ${after.status} ${problemCode(after.body)}`);
    } finally {
      for (const st of opened.streams) st.close();
      await this.procs.stop(gw.child);
      if (bare) await this.procs.stop(bare.child);
      await this.procs.stop(worker);
    }
    return row;
  }

  async streamOpen(): Promise<PairRow> {
    const row: PairRow = {
      id: 'stream_open',
      figure: 'stream open: GET /chat/stream to the `session` event (new connection each, then closed)',
      bare: "writes the gateway's stream headers and a `session` event (random id and token) and keeps the session in memory until the client closes; no Redis (the gateway admits in Redis and stores the session there)",
    };
    await this.fresh();
    const gw = await this.gateway();
    let bare: Server | undefined;
    try {
      const headers = await this.streamHeadersOf(gw);
      bare = await this.procs.bare({ BARE_STREAM_HEADERS: JSON.stringify(headers) });
      log(`   ${opt.concurrency} loops, ${opt.warmupMs / 1_000} s warm-up + ${opt.seconds} s each`);
      const run = async (server: Server, redisCounts: boolean): Promise<ServerFigures> => {
        const m = this.meters(server);
        return this.loopFigures(await streamOpenLoop(server.url, { concurrency: opt.concurrency, warmupMs: opt.warmupMs, seconds: opt.seconds, window: m }), m, '200 session', redisCounts);
      };
      const b = bare;
      await this.alternate(row, () => run(gw, true), () => run(b, false));
    } finally {
      await this.procs.stop(gw.child);
      if (bare) await this.procs.stop(bare.child);
    }
    return row;
  }

  async questionAccepted(): Promise<PairRow> {
    const perLoop = 4;
    const row: PairRow = {
      id: 'question_accepted',
      figure: 'question accepted: POST -> 202 (keep-alive; the answer, `done` at once, relayed before the session asks again)',
      bare: 'checks the Bearer token against its in-memory session, parses the JSON body, XADDs the question to the same Redis stream (the same fields) and answers 202; relays the worker\'s `done` from its reply channel to the stream',
    };
    await this.fresh();
    const worker = await this.procs.worker(this.redis.url, { BENCH_WORKER_MODE: 'answer', BENCH_TOKENS: '0' });
    const gw = await this.gateway();
    let bare: Server | undefined;
    try {
      const headers = await this.streamHeadersOf(gw);
      bare = await this.procs.bare({ BARE_STREAM_HEADERS: JSON.stringify(headers), REDIS_URL: this.redis.url });
      log(`   ${opt.concurrency} loops x ${perLoop} sessions, ${opt.warmupMs / 1_000} s warm-up + ${opt.seconds} s each`);
      const run = async (server: Server): Promise<ServerFigures> => {
        const m = this.meters(server);
        return this.loopFigures(await questionLoop(server.url, { concurrency: opt.concurrency, sessionsPerLoop: perLoop, warmupMs: opt.warmupMs, seconds: opt.seconds, window: m }), m, '202');
      };
      const b = bare;
      await this.alternate(row, () => run(gw), () => run(b));
    } finally {
      await this.procs.stop(gw.child);
      if (bare) await this.procs.stop(bare.child);
      await this.procs.stop(worker);
    }
    return row;
  }

  async streaming(): Promise<{ gateway?: StreamingFigures; bare?: StreamingFigures }> {
    await this.fresh();
    // Long enough that every answer is still streaming at the window's end (questions spread
    // over 1 s, the window 1 s after the last one), inside the gateway's 30 s question deadline.
    const tokensPerAnswer = Math.ceil(opt.tokensPerSec * (opt.streamSeconds + 4));
    const worker = await this.procs.worker(this.redis.url, { BENCH_WORKER_MODE: 'answer', BENCH_TOKENS: String(tokensPerAnswer), BENCH_TOKENS_PER_SEC: String(opt.tokensPerSec) });
    const env: Record<string, string> = opt.streams > 1_000 ? { DAM_SLOTS_PER_INSTANCE: String(opt.streams) } : {};
    const gw = await this.gateway(env);
    const run = async (server: Server): Promise<StreamingFigures> => {
      const m = this.meters(server, { worker: () => [worker.pid] });
      const r = await streamingRun(server.url, { streams: opt.streams, tokensPerSec: opt.tokensPerSec, tokensPerAnswer, seconds: opt.streamSeconds, window: m });
      return {
        ...r,
        cpuUsPerToken: m.micros('server') / (r.relayedPerSec * opt.streamSeconds),
        cpuCores: m.cores('server'),
        redisCores: m.cores('redis'),
        workerCores: m.cores('worker'),
        clientCores: m.clientCores,
        serverWaitShare: m.waitShare,
      };
    };
    const out: { gateway?: StreamingFigures; bare?: StreamingFigures } = {};
    try {
      const headers = await this.streamHeadersOf(gw);
      log(`   gateway: ${opt.streams} streams x ${opt.tokensPerSec} tokens/s, ${opt.streamSeconds} s window`);
      out.gateway = await run(gw);
      await this.procs.stop(gw.child);
      const bare = await this.procs.bare({ BARE_STREAM_HEADERS: JSON.stringify(headers), REDIS_URL: this.redis.url });
      log('   bare relay');
      out.bare = await run(bare);
      await this.procs.stop(bare.child);
    } finally {
      await this.procs.stop(gw.child);
      await this.procs.stop(worker);
    }
    for (const [k, f] of Object.entries(out)) {
      if (f.tokensReceived < f.tokensExpected) this.notes.push(`streaming, ${k}: ${f.tokensExpected - f.tokensReceived} of ${f.tokensExpected} tokens did not arrive (${f.answersDone} of ${f.streams} answers done) ${JSON.stringify(f.tally)}`);
      if (f.clientCores >= 0.9) this.notes.push(`streaming, ${k}: the load generator used ${(f.clientCores * 100).toFixed(0)}% of a core; its own delays are in the latencies`);
      if (f.serverWaitShare >= 0.1) this.notes.push(`streaming, ${k}: the server's event loop waited for a CPU ${(f.serverWaitShare * 100).toFixed(0)}% of the window (a busy machine): its figures read low`);
    }
    return out;
  }

  async idle(): Promise<{ gateway?: IdleFigures; bare?: IdleFigures }> {
    await this.fresh();
    const n = opt.idleSessions;
    const hold = async (server: Server, lagP99: () => Promise<number>): Promise<IdleFigures> => {
      // Warm: code paths compiled, pools and buffers grown, before the baseline is read.
      const warm = await openMany(server.url, 200, 50);
      for (const s of warm.streams) s.close();
      await new Promise((r) => setTimeout(r, 2_000));
      const rss0 = rssBytes(server.pid);
      let pings = 0;
      const opened = await openMany(server.url, n, 200, undefined, { onPing: () => pings++ });
      await lagP99(); // the opening burst's lag is not the idle lag
      const lags: number[] = [];
      for (let s = 0; s < opt.idleHold; s++) {
        await new Promise((r) => setTimeout(r, 1_000));
        lags.push(await lagP99());
      }
      const rss1 = rssBytes(server.pid);
      for (const s of opened.streams) s.close();
      const sorted = [...lags].sort((a, b) => a - b);
      return {
        sessions: opened.streams.length,
        failed: opened.failed,
        openPerSec: opened.streams.length / opened.seconds,
        rssBeforeMiB: rss0 / 2 ** 20,
        rssAfterMiB: rss1 / 2 ** 20,
        rssPerSessionKiB: (rss1 - rss0) / 1024 / Math.max(1, opened.streams.length),
        lagP99Ms: lags,
        lagP99MaxMs: sorted[sorted.length - 1] ?? NaN,
        lagP99MedianMs: sorted[Math.floor(sorted.length / 2)] ?? NaN,
        pings,
        holdSeconds: opt.idleHold,
      };
    };
    const out: { gateway?: IdleFigures; bare?: IdleFigures } = {};
    const gw = await this.gateway({ DAM_SLOTS_PER_INSTANCE: String(n) });
    try {
      const headers = await this.streamHeadersOf(gw);
      log(`   gateway: ${n} idle sessions held ${opt.idleHold} s`);
      // prom-client's default metric: the p99 of the event-loop delay since the previous scrape.
      out.gateway = await hold(gw, async () => {
        const text = (await request(`${gw.url}/metrics`, { timeoutMs: 5_000 })).body;
        const line = text.split('\n').find((l) => /^td_nodejs_eventloop_lag_p99_seconds[ {]/.test(l));
        return line ? Number(line.slice(line.lastIndexOf(' ') + 1)) * 1_000 : NaN;
      });
      if (!Number.isFinite(out.gateway.lagP99MaxMs)) this.notes.push('idle: td_nodejs_eventloop_lag_p99_seconds not found in the gateway\'s /metrics');
      await this.procs.stop(gw.child);
      const bare = await this.procs.bare({ BARE_STREAM_HEADERS: JSON.stringify(headers) });
      log('   bare server');
      out.bare = await hold(bare, async () => (JSON.parse((await request(`${bare.url}/lag`)).body) as { p99Ms: number }).p99Ms);
      await this.procs.stop(bare.child);
    } finally {
      await this.procs.stop(gw.child);
    }
    for (const [k, f] of Object.entries(out)) {
      if (f.sessions < n) this.notes.push(`idle, ${k}: only ${f.sessions} of ${n} sessions opened ${JSON.stringify(f.failed)}`);
    }
    return out;
  }

  async edge(): Promise<EdgeRow[]> {
    await this.fresh();
    const upstream = await this.procs.bare({});
    const cert = await ensureLocalCertificate(join(this.dir, 'tls'));
    const plain = await this.procs.nginx([`127.0.0.1:${upstream.port}`]);
    const secure = await this.procs.nginx([`127.0.0.1:${upstream.port}`], { certFile: cert.certFile, keyFile: cert.keyFile, ca: cert.ca });
    const kinds: Array<{ label: string; url: string; mode: ConnectMode; v: 'TLSv1.2' | 'TLSv1.3' }> = [
      { label: 'plain HTTP', url: plain.url, mode: 'plain', v: 'TLSv1.3' },
      { label: 'TLS 1.3, full handshake', url: secure.url, mode: 'tls-full', v: 'TLSv1.3' },
      { label: 'TLS 1.3, resumed (ticket)', url: secure.url, mode: 'tls-resumed', v: 'TLSv1.3' },
      { label: 'TLS 1.2, full handshake', url: secure.url, mode: 'tls-full', v: 'TLSv1.2' },
      { label: 'TLS 1.2, resumed', url: secure.url, mode: 'tls-resumed', v: 'TLSv1.2' },
    ];
    const rows: EdgeRow[] = [];
    try {
      for (const k of kinds) {
        const u = new URL(k.url);
        const handle = k.mode === 'plain' ? plain : secure;
        const master = handle.child.pid as number;
        const m = new Meters({ nginx: () => [master, ...childPids(master)] });
        log(`   ${k.label}: ${16} loops, ${opt.warmupMs / 1_000} s warm-up + ${opt.edgeSeconds} s`);
        // /admin is answered 404 by nginx itself: the connection and its handshake are the cost.
        const r = await connectLoop(u.hostname, Number(u.port), { mode: k.mode, maxVersion: k.v, ca: cert.ca, path: '/admin/bench', concurrency: 16, warmupMs: opt.warmupMs, seconds: opt.edgeSeconds, window: m });
        rows.push({
          connection: k.label,
          perSec: r.perSec,
          nginxUsPerConn: m.micros('nginx') / r.ops,
          nginxCores: m.cores('nginx'),
          clientCores: m.clientCores,
          latency: r.latency,
          resumedShare: r.resumedShare,
          tally: r.tally,
        });
        const total = Object.values(r.tally).reduce((a, b) => a + b, 0);
        if ((r.tally['404'] ?? 0) < 0.99 * total) this.notes.push(`edge, ${k.label}: not every connection got nginx's 404 (${JSON.stringify(r.tally)})`);
        if (k.mode === 'tls-resumed' && r.resumedShare < 0.99) this.notes.push(`edge, ${k.label}: only ${(r.resumedShare * 100).toFixed(1)}% of the connections resumed`);
        if (k.mode === 'tls-full' && r.resumedShare > 0) this.notes.push(`edge, ${k.label}: ${(r.resumedShare * 100).toFixed(1)}% resumed although no session was offered`);
      }
    } finally {
      await this.procs.stop(secure.child);
      await this.procs.stop(plain.child);
      await this.procs.stop(upstream.child);
    }
    return rows;
  }
}

async function main(): Promise<void> {
  const started = Date.now();
  const machine = machineInfo();
  const command = `npm run bench:gateway${process.argv.length > 2 ? ` -- ${process.argv.slice(2).join(' ')}` : ''}`;
  const dir = mkdtempSync(join(tmpdir(), 'td-bench-gateway-'));
  const bench = new Bench(dir);
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
    await step('dam_full', () => bench.damFull(), (r) => result.requests.push(r));
    await step('ai_overloaded', () => bench.aiOverloaded(), (r) => result.requests.push(r));
    await step('stream_open', () => bench.streamOpen(), (r) => result.requests.push(r));
    await step('question_accepted', () => bench.questionAccepted(), (r) => result.requests.push(r));
    await step('streaming', () => bench.streaming(), (r) => (result.streaming = r));
    await step('idle', () => bench.idle(), (r) => (result.idle = r));
    await step('edge', () => bench.edge(), (r) => (result.edge = r));
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
