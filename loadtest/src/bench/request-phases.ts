/**
 * The request phases: one gateway process and the bare server measured in turn on the same
 * request, refusals with autocannon, stream opens and questions with the benchmark's own loops.
 */
import autocannon from 'autocannon';
import { openMany, problemCode, questionLoop, request, streamOpenLoop, type LoopResult, type Response } from './clients';
import { captured, checkPair, log, type BenchContext, type Meters } from './bench-context';
import type { Server } from './processes';
import type { PairRow, ServerFigures } from './report';

/** autocannon against one server: a warm-up, then the measured window with the CPU meters. */
async function cannon(
  ctx: BenchContext,
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
  const base = { url: `${server.url}${path}`, connections: ctx.opt.connections, pipelining: 1, method: init.method, headers: init.headers, body: init.body, timeout: 10, setupClient };
  await autocannon({ ...base, duration: ctx.opt.warmupMs / 1_000 });
  const m = ctx.meters(server);
  m.start();
  const r = await autocannon({ ...base, duration: ctx.opt.seconds });
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

function loopFigures(r: LoopResult, m: Meters, expected: string, redisCounts = true): ServerFigures {
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

/**
 * Measures the gateway and the bare server in turn, `reps` times each (both already running and
 * idle while the other is measured), and keeps each side's median run by throughput, so a
 * burst of load from elsewhere on the machine does not land on one side only.
 */
async function alternate(ctx: BenchContext, row: PairRow, gw: () => Promise<ServerFigures>, bare: () => Promise<ServerFigures>): Promise<void> {
  const g: ServerFigures[] = [];
  const b: ServerFigures[] = [];
  for (let i = 0; i < ctx.opt.reps; i++) {
    log(`   gateway${ctx.opt.reps > 1 ? `, run ${i + 1} of ${ctx.opt.reps}` : ''}`);
    g.push(await gw());
    log(`   bare server${ctx.opt.reps > 1 ? `, run ${i + 1} of ${ctx.opt.reps}` : ''}`);
    b.push(await bare());
  }
  const median = (runs: ServerFigures[]): ServerFigures => {
    const m = [...runs].sort((x, y) => x.perSec - y.perSec)[Math.floor((runs.length - 1) / 2)] as ServerFigures;
    return runs.length > 1 ? { ...m, runsPerSec: runs.map((r) => r.perSec) } : m;
  };
  row.gateway = median(g);
  row.bareFigures = median(b);
  checkPair(ctx, row);
}

export async function damFull(ctx: BenchContext): Promise<PairRow> {
  const row: PairRow = {
    id: 'dam_full',
    figure: '429 `dam_full`: GET /chat/stream, budget full',
    bare: "answers every request with the gateway's own 429, captured in this run (status, headers, problem body; a fresh X-Request-Id each)",
  };
  await ctx.fresh();
  const gw = await ctx.gateway({ DAM_SLOTS_PER_INSTANCE: '2' });
  const held = await openMany(gw.url, 2, 2);
  let bare: Server | undefined;
  try {
    if (held.streams.length !== 2) throw new Error(`dam_full: could not fill the budget (${JSON.stringify(held.failed)})`);
    const refused = await request(`${gw.url}/chat/stream`, { headers: { accept: 'text/event-stream' }, agent: ctx.keepAlive });
    if (refused.status !== 429 || problemCode(refused.body) !== 'dam_full') throw new Error(`dam_full: expected 429 dam_full, got ${refused.status} ${refused.body.slice(0, 200)}`);
    bare = await ctx.procs.bare({ BARE_REFUSAL: JSON.stringify(captured(refused)) });
    log(`   the gateway answers 429 dam_full; autocannon ${ctx.opt.connections} connections, ${ctx.opt.warmupMs / 1_000} s warm-up + ${ctx.opt.seconds} s each`);
    const init = { method: 'GET' as const, headers: { accept: 'text/event-stream' } };
    const b = bare;
    await alternate(ctx, row, () => cannon(ctx, gw, '/chat/stream', init, '429'), () => cannon(ctx, b, '/chat/stream', init, '429'));
    const after = await request(`${gw.url}/chat/stream`, { headers: { accept: 'text/event-stream' } });
    if (problemCode(after.body) !== 'dam_full') ctx.notes.push(`dam_full: after the windows the gateway answered ${after.status} ${problemCode(after.body)}`);
  } finally {
    for (const st of held.streams) st.close();
    await ctx.procs.stop(gw.child);
    if (bare) await ctx.procs.stop(bare.child);
  }
  return row;
}

export async function aiOverloaded(ctx: BenchContext): Promise<PairRow> {
  const row: PairRow = {
    id: 'ai_overloaded',
    figure: '503 `ai_overloaded`: POST a question, AI queue too long',
    bare: "reads the POST body and answers with the gateway's own 503, captured in this run (status, headers, problem body; a fresh X-Request-Id each)",
  };
  await ctx.fresh();
  // Declares 1 answer/s and never reads: a few questions queue, then the gate's estimated wait
  // (queue / throughput) passes DAM_MAX_QUEUE_WAIT_MS and every question is refused.
  const worker = await ctx.procs.worker(ctx.redis.url, { BENCH_WORKER_MODE: 'silent', BENCH_CAPACITY: '1' });
  const gw = await ctx.gateway();
  // A few questions queue; each connection then asks on its own refused session (a session
  // with a question in flight would answer 409, and two at once on one session collide).
  const opened = await openMany(gw.url, ctx.opt.connections + 12, 16);
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
        agent: ctx.keepAlive,
      });
      const key = `${res.status} ${problemCode(res.body)}`;
      seen[key] = (seen[key] ?? 0) + 1;
      if (res.status === 503 && problemCode(res.body) === 'ai_overloaded') {
        refused ??= res;
        targets.push(sess);
      }
      if (targets.length >= ctx.opt.connections) break;
    }
    if (!refused || targets.length < ctx.opt.connections) throw new Error(`ai_overloaded: the AI gate refused ${targets.length} sessions, ${ctx.opt.connections} needed (${JSON.stringify(seen)})`);
    bare = await ctx.procs.bare({ BARE_REFUSAL: JSON.stringify(captured(refused)) });
    log(`   the gateway answers 503 ai_overloaded (${JSON.stringify(seen)}); autocannon ${ctx.opt.connections} connections, one session each`);
    const init = {
      method: 'POST' as const,
      headers: { 'content-type': 'application/json' },
      body,
      perConnection: targets.map((t) => ({ path: `/chat/sessions/${t.sessionId}/messages`, headers: { authorization: `Bearer ${t.token}` } })),
    };
    const first = targets[0] as { sessionId: string; token: string };
    const path = `/chat/sessions/${first.sessionId}/messages`;
    const b = bare;
    await alternate(ctx, row, () => cannon(ctx, gw, path, init, '503'), () => cannon(ctx, b, path, init, '503'));
    const after = await request(`${gw.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${first.token}` }, body });
    if (problemCode(after.body) !== 'ai_overloaded') ctx.notes.push(`ai_overloaded: after the windows the gateway answered ${after.status} ${problemCode(after.body)}`);
  } finally {
    for (const st of opened.streams) st.close();
    await ctx.procs.stop(gw.child);
    if (bare) await ctx.procs.stop(bare.child);
    await ctx.procs.stop(worker);
  }
  return row;
}

export async function streamOpen(ctx: BenchContext): Promise<PairRow> {
  const row: PairRow = {
    id: 'stream_open',
    figure: 'stream open: GET /chat/stream to the `session` event (new connection each; then DELETE on a keep-alive connection, as a client done with it, and closed)',
    bare: "writes the gateway's stream headers and a `session` event (random id and token) and keeps the session in memory until the DELETE (204) or the close; no Redis (the gateway admits in Redis and stores the session there)",
  };
  await ctx.fresh();
  const gw = await ctx.gateway();
  let bare: Server | undefined;
  try {
    const headers = await ctx.streamHeadersOf(gw);
    bare = await ctx.procs.bare({ BARE_STREAM_HEADERS: JSON.stringify(headers) });
    log(`   ${ctx.opt.concurrency} loops, ${ctx.opt.warmupMs / 1_000} s warm-up + ${ctx.opt.seconds} s each`);
    const run = async (server: Server, redisCounts: boolean): Promise<ServerFigures> => {
      const m = ctx.meters(server);
      return loopFigures(await streamOpenLoop(server.url, { concurrency: ctx.opt.concurrency, warmupMs: ctx.opt.warmupMs, seconds: ctx.opt.seconds, window: m }), m, '200 session', redisCounts);
    };
    const b = bare;
    await alternate(ctx, row, () => run(gw, true), () => run(b, false));
  } finally {
    await ctx.procs.stop(gw.child);
    if (bare) await ctx.procs.stop(bare.child);
  }
  return row;
}

export async function questionAccepted(ctx: BenchContext): Promise<PairRow> {
  const perLoop = 4;
  const row: PairRow = {
    id: 'question_accepted',
    figure: 'question accepted: POST -> 202 (keep-alive; the answer, `done` at once, relayed before the session asks again)',
    bare: 'checks the Bearer token against its in-memory session, parses the JSON body, XADDs the question to the same Redis stream (the same fields) and answers 202; relays the worker\'s `done` from its reply channel to the stream',
  };
  await ctx.fresh();
  const worker = await ctx.procs.worker(ctx.redis.url, { BENCH_WORKER_MODE: 'answer', BENCH_TOKENS: '0' });
  const gw = await ctx.gateway();
  let bare: Server | undefined;
  try {
    const headers = await ctx.streamHeadersOf(gw);
    bare = await ctx.procs.bare({ BARE_STREAM_HEADERS: JSON.stringify(headers), REDIS_URL: ctx.redis.url });
    log(`   ${ctx.opt.concurrency} loops x ${perLoop} sessions, ${ctx.opt.warmupMs / 1_000} s warm-up + ${ctx.opt.seconds} s each`);
    const run = async (server: Server): Promise<ServerFigures> => {
      const m = ctx.meters(server);
      return loopFigures(await questionLoop(server.url, { concurrency: ctx.opt.concurrency, sessionsPerLoop: perLoop, warmupMs: ctx.opt.warmupMs, seconds: ctx.opt.seconds, window: m }), m, '202');
    };
    const b = bare;
    await alternate(ctx, row, () => run(gw), () => run(b));
  } finally {
    await ctx.procs.stop(gw.child);
    if (bare) await ctx.procs.stop(bare.child);
    await ctx.procs.stop(worker);
  }
  return row;
}
