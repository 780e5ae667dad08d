/** The streaming path and idle sessions: one gateway process beside the bare server. */
import { openMany, request, streamingRun } from './clients';
import { log, type BenchContext } from './bench-context';
import type { Server } from './processes';
import { rssBytes } from './proc';
import type { IdleFigures, StreamingFigures } from './report';

export async function streaming(ctx: BenchContext): Promise<{ gateway?: StreamingFigures; bare?: StreamingFigures }> {
  await ctx.fresh();
  // Long enough that every answer is still streaming at the window's end (questions spread
  // over 1 s, the window 1 s after the last one), inside the gateway's 30 s question deadline.
  const tokensPerAnswer = Math.ceil(ctx.opt.tokensPerSec * (ctx.opt.streamSeconds + 4));
  const worker = await ctx.procs.worker(ctx.redis.url, { BENCH_WORKER_MODE: 'answer', BENCH_TOKENS: String(tokensPerAnswer), BENCH_TOKENS_PER_SEC: String(ctx.opt.tokensPerSec), BENCH_BATCH_MS: String(ctx.opt.batchMs) });
  const env: Record<string, string> = ctx.opt.streams > 1_000 ? { DAM_SLOTS_PER_INSTANCE: String(ctx.opt.streams) } : {};
  const gw = await ctx.gateway(env);
  const run = async (server: Server): Promise<StreamingFigures> => {
    const m = ctx.meters(server, { worker: () => [worker.pid] });
    const r = await streamingRun(server.url, { streams: ctx.opt.streams, tokensPerSec: ctx.opt.tokensPerSec, tokensPerAnswer, seconds: ctx.opt.streamSeconds, window: m });
    return {
      ...r,
      batchMs: ctx.opt.batchMs,
      cpuUsPerToken: m.micros('server') / r.tokensInWindow,
      cpuCores: m.cores('server'),
      redisCores: m.cores('redis'),
      workerCores: m.cores('worker'),
      clientCores: m.clientCores,
      serverWaitShare: m.waitShare,
    };
  };
  const out: { gateway?: StreamingFigures; bare?: StreamingFigures } = {};
  try {
    const headers = await ctx.streamHeadersOf(gw);
    log(`   gateway: ${ctx.opt.streams} streams x ${ctx.opt.tokensPerSec} tokens/s, ${ctx.opt.streamSeconds} s window, worker reply window ${ctx.opt.batchMs} ms`);
    out.gateway = await run(gw);
    await ctx.procs.stop(gw.child);
    const bare = await ctx.procs.bare({ BARE_STREAM_HEADERS: JSON.stringify(headers), REDIS_URL: ctx.redis.url });
    log('   bare relay');
    out.bare = await run(bare);
    await ctx.procs.stop(bare.child);
  } finally {
    await ctx.procs.stop(gw.child);
    await ctx.procs.stop(worker);
  }
  for (const [k, f] of Object.entries(out)) {
    if (f.endedInWindow > 0) ctx.notes.push(`streaming, ${k}: ${f.endedInWindow} answers ended before the window did (their questions were accepted late): less than ${f.streams} x ${ctx.opt.tokensPerSec} tokens/s was offered at the end`);
    if (f.tokensReceived < f.tokensExpected) ctx.notes.push(`streaming, ${k}: ${f.tokensExpected - f.tokensReceived} of ${f.tokensExpected} tokens did not arrive (${f.answersDone} of ${f.streams} answers done) ${JSON.stringify(f.tally)}`);
    if (f.clientCores >= 0.9) ctx.notes.push(`streaming, ${k}: the load generator used ${(f.clientCores * 100).toFixed(0)}% of a core; its own delays are in the latencies`);
    if (f.serverWaitShare >= 0.1) ctx.notes.push(`streaming, ${k}: the server's event loop waited for a CPU ${(f.serverWaitShare * 100).toFixed(0)}% of the window (a busy machine): its figures read low`);
  }
  return out;
}

export async function idle(ctx: BenchContext): Promise<{ gateway?: IdleFigures; bare?: IdleFigures }> {
  await ctx.fresh();
  const n = ctx.opt.idleSessions;
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
    for (let s = 0; s < ctx.opt.idleHold; s++) {
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
      holdSeconds: ctx.opt.idleHold,
    };
  };
  const out: { gateway?: IdleFigures; bare?: IdleFigures } = {};
  const gw = await ctx.gateway({ DAM_SLOTS_PER_INSTANCE: String(n) });
  try {
    const headers = await ctx.streamHeadersOf(gw);
    log(`   gateway: ${n} idle sessions held ${ctx.opt.idleHold} s`);
    // prom-client's default metric: the p99 of the event-loop delay since the previous scrape.
    out.gateway = await hold(gw, async () => {
      const text = (await request(`${gw.url}/metrics`, { timeoutMs: 5_000 })).body;
      const line = text.split('\n').find((l) => /^td_nodejs_eventloop_lag_p99_seconds[ {]/.test(l));
      return line ? Number(line.slice(line.lastIndexOf(' ') + 1)) * 1_000 : NaN;
    });
    if (!Number.isFinite(out.gateway.lagP99MaxMs)) ctx.notes.push('idle: td_nodejs_eventloop_lag_p99_seconds not found in the gateway\'s /metrics');
    await ctx.procs.stop(gw.child);
    const bare = await ctx.procs.bare({ BARE_STREAM_HEADERS: JSON.stringify(headers) });
    log('   bare server');
    out.bare = await hold(bare, async () => (JSON.parse((await request(`${bare.url}/lag`)).body) as { p99Ms: number }).p99Ms);
    await ctx.procs.stop(bare.child);
  } finally {
    await ctx.procs.stop(gw.child);
  }
  for (const [k, f] of Object.entries(out)) {
    if (f.sessions < n) ctx.notes.push(`idle, ${k}: only ${f.sessions} of ${n} sessions opened ${JSON.stringify(f.failed)}`);
  }
  return out;
}
