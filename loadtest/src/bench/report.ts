import type { LatencySummary, StreamingResult } from './clients';
import type { MachineInfo } from './proc';

/** One server's figures for one kind of request, over the measured window. */
export interface ServerFigures {
  perSec: number;
  latency: LatencySummary;
  /** CPU (every thread) of the server process per operation, in µs. */
  cpuUsPerOp: number;
  /** The server process's share of one core over the window. */
  cpuCores: number;
  /** Redis's CPU per operation (the gateway's calls to it; 0 for a bare server without Redis). */
  redisUsPerOp: number;
  /** The load generator's share of one core: near 1, the client may have set the pace. */
  clientCores: number;
  /** Share of the window the server's event-loop thread waited for a CPU (a busy machine). */
  serverWaitShare: number;
  /** Outcomes by status and problem code; the expected one should be (nearly) all of them. */
  tally: Record<string, number>;
  /** The outcome this figure counts, e.g. `429 dam_full`. */
  expected: string;
  /** With --reps: every run's throughput; the figures are the median run's. */
  runsPerSec?: number[];
}

export interface PairRow {
  id: 'dam_full' | 'ai_overloaded' | 'stream_open' | 'question_accepted';
  figure: string;
  /** What the bare server does for it. */
  bare: string;
  gateway?: ServerFigures;
  bareFigures?: ServerFigures;
}

export interface StreamingFigures extends StreamingResult {
  /** The worker's reply window, ms (0: one message per reply). */
  batchMs?: number;
  cpuUsPerToken: number;
  cpuCores: number;
  redisCores: number;
  workerCores: number;
  clientCores: number;
  serverWaitShare: number;
}

export interface IdleFigures {
  sessions: number;
  failed: Record<string, number>;
  openPerSec: number;
  rssBeforeMiB: number;
  rssAfterMiB: number;
  /** (RSS with the sessions held - RSS before) / sessions, in KiB. */
  rssPerSessionKiB: number;
  /** Event-loop delay p99 of each second while the sessions were held, in ms. */
  lagP99Ms: number[];
  lagP99MaxMs: number;
  lagP99MedianMs: number;
  pings: number;
  holdSeconds: number;
}

export interface EdgeRow {
  connection: string;
  perSec: number;
  /** nginx (master and worker) CPU per new connection, in µs. */
  nginxUsPerConn: number;
  nginxCores: number;
  clientCores: number;
  latency: LatencySummary;
  resumedShare: number;
  tally: Record<string, number>;
}

export interface BenchResult {
  command: string;
  machine: MachineInfo;
  loadavgAfter: number[];
  finishedAt: string;
  durationSec: number;
  options: Record<string, unknown>;
  requests: PairRow[];
  streaming?: { gateway?: StreamingFigures; bare?: StreamingFigures };
  idle?: { gateway?: IdleFigures; bare?: IdleFigures };
  edge?: EdgeRow[];
  notes: string[];
}

export interface Goal {
  what: string;
  value: string;
  met: boolean | null;
}

export function ratio(a: number | undefined, b: number | undefined): number {
  if (a === undefined || b === undefined || !Number.isFinite(a) || !Number.isFinite(b) || b === 0) return NaN;
  return a / b;
}

export function fmt(n: number | undefined, digits = 0): string {
  if (n === undefined || !Number.isFinite(n)) return 'n/a';
  return n.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

function fx(n: number): string {
  return Number.isFinite(n) ? `${n.toFixed(n < 0.1 ? 3 : 2)}x` : 'n/a';
}

/** Share of the outcomes that are the expected one. */
export function expectedShare(f: ServerFigures): number {
  const total = Object.values(f.tally).reduce((a, b) => a + b, 0);
  return total ? (f.tally[f.expected] ?? 0) / total : 0;
}

/** The issue's goals, computed from the figures (null: not measured in this run). */
export function goals(r: BenchResult): Goal[] {
  const row = (id: PairRow['id']): PairRow | undefined => r.requests.find((x) => x.id === id);
  const pair = (id: PairRow['id'], min: number, label: string): Goal => {
    const p = row(id);
    const q = ratio(p?.gateway?.perSec, p?.bareFigures?.perSec);
    return { what: `${label} >= ${min}x the bare server`, value: fx(q), met: Number.isFinite(q) ? q >= min : null };
  };
  const refusal = (): Goal => {
    const qs = (['dam_full', 'ai_overloaded'] as const).map((id) => ratio(row(id)?.gateway?.perSec, row(id)?.bareFigures?.perSec));
    const known = qs.filter(Number.isFinite);
    return {
      what: 'refusal throughput of one gateway process >= 0.5x the bare server (429 dam_full, 503 ai_overloaded)',
      value: qs.map(fx).join(', '),
      met: known.length ? known.every((q) => q >= 0.5) : null,
    };
  };
  const s = r.streaming?.gateway;
  const idle = r.idle?.gateway;
  return [
    refusal(),
    pair('stream_open', 0.25, 'stream open (to the session event)'),
    pair('question_accepted', 0.2, 'question accepted (202)'),
    {
      what: 'one gateway process relays >= 50,000 tokens/s with added inter-token latency p99 <= 50 ms',
      value: s ? `${fmt(s.relayedPerSec)} tokens/s (${fmt(s.streams)} streams x ${fmt(s.offeredPerSec / Math.max(1, s.streams))}/s), added p99 ${fmt(s.addedLatency.p99, 1)} ms, gap excess p99 ${fmt(s.gapExcess.p99, 1)} ms` : 'n/a',
      met: s ? s.relayedPerSec >= 50_000 && s.addedLatency.p99 <= 50 : null,
    },
    {
      what: '<= 32 KB RSS per idle open session',
      value: idle ? `${fmt(idle.rssPerSessionKiB, 1)} KiB (${fmt(idle.sessions)} sessions)` : 'n/a',
      met: idle ? idle.rssPerSessionKiB <= 32 : null,
    },
    {
      what: '10,000 idle sessions on one instance with event-loop lag p99 <= 50 ms',
      value: idle ? `${fmt(idle.sessions)} sessions, lag p99 max ${fmt(idle.lagP99MaxMs, 1)} ms (median ${fmt(idle.lagP99MedianMs, 1)} ms)` : 'n/a',
      met: idle ? idle.sessions >= 10_000 && idle.lagP99MaxMs <= 50 : null,
    },
  ];
}

function lat(l: LatencySummary | undefined): string {
  return l ? `${fmt(l.p50, 2)} / ${fmt(l.p99, 2)}` : 'n/a';
}

/** The run as Markdown: machine, command, tables with ratios, goals, notes. */
export function renderMarkdown(r: BenchResult): string {
  const m = r.machine;
  const out: string[] = [];
  out.push(`### Gateway benchmark, ${m.date.slice(0, 16).replace('T', ' ')} UTC (${fmt(r.durationSec)} s)`, '');
  out.push('```bash', r.command, '```', '');
  out.push(
    `- **Machine:** \`nproc\` ${m.nproc}, ${m.cpuModel}, ${m.memGiB} GiB, Linux ${m.kernel}, Node ${m.node}, nginx ${m.nginx}, redis-server ${m.redis}.`,
    `- **Load average** (1/5/15 min): ${m.loadavg.join(' / ')} before, ${r.loadavgAfter.join(' / ')} after.`,
    '- Everything on loopback; the load generator, the servers, Redis and the worker share the machine. Ratios are gateway ÷ bare from the same run.',
    '',
  );
  if (r.requests.length) {
    out.push('#### Requests: one gateway process beside a bare `node:http` process', '');
    out.push('| figure | gateway /s | bare /s | gateway ÷ bare | p50 / p99 ms, gateway | p50 / p99 ms, bare | CPU µs/op, gateway (+ Redis) | CPU µs/op, bare (+ Redis) | CPU ratio | client core, gw / bare | server waited for a CPU, gw / bare |');
    out.push('|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|');
    for (const p of r.requests) {
      const g = p.gateway;
      const b = p.bareFigures;
      out.push(
        `| ${p.figure} | ${fmt(g?.perSec)} | ${fmt(b?.perSec)} | ${fx(ratio(g?.perSec, b?.perSec))} | ${lat(g?.latency)} | ${lat(b?.latency)} | ${fmt(g?.cpuUsPerOp)} (+${fmt(g?.redisUsPerOp)}) | ${fmt(b?.cpuUsPerOp)} (+${fmt(b?.redisUsPerOp)}) | ${fx(ratio(g?.cpuUsPerOp, b?.cpuUsPerOp))} | ${fmt(g?.clientCores, 2)} / ${fmt(b?.clientCores, 2)} | ${pct(g?.serverWaitShare)} / ${pct(b?.serverWaitShare)} |`,
      );
    }
    out.push('', 'What the bare server does for each:', '');
    for (const p of r.requests) out.push(`- ${p.figure}: ${p.bare}`);
    const runs = r.requests.filter((p) => p.gateway?.runsPerSec || p.bareFigures?.runsPerSec);
    if (runs.length) {
      out.push('', 'Each side measured in turn, the median run kept; every run (/s):', '');
      for (const p of runs) out.push(`- ${p.id}: gateway ${(p.gateway?.runsPerSec ?? []).map((v) => fmt(v)).join(', ')}; bare ${(p.bareFigures?.runsPerSec ?? []).map((v) => fmt(v)).join(', ')}`);
    }
    out.push('');
  }
  const s = r.streaming;
  if (s?.gateway || s?.bare) {
    const g = s.gateway;
    const b = s.bare;
    const streamsLine = (x?: StreamingFigures): string => (x ? `${fmt(x.streams)} x ${fmt(x.offeredPerSec / Math.max(1, x.streams))}/s = ${fmt(x.offeredPerSec)}` : 'n/a');
    out.push('#### Streaming: tokens from the worker through Redis to the clients', '');
    out.push('| | gateway | bare relay | gateway ÷ bare |', '|---|--:|--:|--:|');
    out.push(`| streams x tokens/s offered | ${streamsLine(g)} | ${streamsLine(b)} | |`);
    out.push(`| worker's reply window ms (0: a message per reply) | ${fmt(g?.batchMs)} | ${fmt(b?.batchMs)} | |`);
    out.push(`| tokens/s relayed (arrived during the window) | ${fmt(g?.relayedPerSec)} | ${fmt(b?.relayedPerSec)} | ${fx(ratio(g?.relayedPerSec, b?.relayedPerSec))} |`);
    out.push(`| added latency p50 / p99 / max ms (worker hand-over -> client) | ${g ? `${lat(g.addedLatency)} / ${fmt(g.addedLatency.max, 1)}` : 'n/a'} | ${b ? `${lat(b.addedLatency)} / ${fmt(b.addedLatency.max, 1)}` : 'n/a'} | |`);
    out.push(`| inter-token gap excess p50 / p99 ms (client gap - scheduled gap) | ${lat(g?.gapExcess)} | ${lat(b?.gapExcess)} | |`);
    out.push(`| latency from the worker's schedule p99 ms | ${fmt(g?.fromSchedule.p99, 1)} | ${fmt(b?.fromSchedule.p99, 1)} | |`);
    out.push(`| server CPU µs per token | ${fmt(g?.cpuUsPerToken, 1)} | ${fmt(b?.cpuUsPerToken, 1)} | ${fx(ratio(g?.cpuUsPerToken, b?.cpuUsPerToken))} |`);
    out.push(`| cores: server / Redis / worker / client | ${g ? [g.cpuCores, g.redisCores, g.workerCores, g.clientCores].map((v) => fmt(v, 2)).join(' / ') : 'n/a'} | ${b ? [b.cpuCores, b.redisCores, b.workerCores, b.clientCores].map((v) => fmt(v, 2)).join(' / ') : 'n/a'} | |`);
    out.push(`| server's event loop waited for a CPU | ${pct(g?.serverWaitShare)} | ${pct(b?.serverWaitShare)} | |`);
    out.push(`| tokens received / expected, answers done | ${g ? `${fmt(g.tokensReceived)} / ${fmt(g.tokensExpected)}, ${fmt(g.answersDone)}` : 'n/a'} | ${b ? `${fmt(b.tokensReceived)} / ${fmt(b.tokensExpected)}, ${fmt(b.answersDone)}` : 'n/a'} | |`);
    out.push('');
  }
  const i = r.idle;
  if (i?.gateway || i?.bare) {
    const g = i.gateway;
    const b = i.bare;
    out.push('#### Idle open sessions on one process', '');
    out.push('| | gateway | bare | gateway ÷ bare |', '|---|--:|--:|--:|');
    out.push(`| sessions held (failed to open) | ${fmt(g?.sessions)} (${fmt(sum(g?.failed))}) | ${fmt(b?.sessions)} (${fmt(sum(b?.failed))}) | |`);
    out.push(`| opened per second | ${fmt(g?.openPerSec)} | ${fmt(b?.openPerSec)} | ${fx(ratio(g?.openPerSec, b?.openPerSec))} |`);
    out.push(`| RSS before -> held MiB | ${g ? `${fmt(g.rssBeforeMiB, 1)} -> ${fmt(g.rssAfterMiB, 1)}` : 'n/a'} | ${b ? `${fmt(b.rssBeforeMiB, 1)} -> ${fmt(b.rssAfterMiB, 1)}` : 'n/a'} | |`);
    out.push(`| RSS per idle session KiB | ${fmt(g?.rssPerSessionKiB, 1)} | ${fmt(b?.rssPerSessionKiB, 1)} | ${fx(ratio(g?.rssPerSessionKiB, b?.rssPerSessionKiB))} |`);
    out.push(`| event-loop delay p99 ms (prom-client's; includes its 10 ms sampling interval), max / median of the seconds held | ${g ? `${fmt(g.lagP99MaxMs, 1)} / ${fmt(g.lagP99MedianMs, 1)}` : 'n/a'} | ${b ? `${fmt(b.lagP99MaxMs, 1)} / ${fmt(b.lagP99MedianMs, 1)}` : 'n/a'} | |`);
    out.push(`| held for s (pings seen) | ${g ? `${fmt(g.holdSeconds)} (${fmt(g.pings)})` : 'n/a'} | ${b ? `${fmt(b.holdSeconds)} (${fmt(b.pings)})` : 'n/a'} | |`);
    out.push('');
  }
  if (r.edge?.length) {
    out.push('#### The edge (nginx, one worker): CPU per new connection, one small request each, answered by nginx itself', '');
    out.push('| connection | conn/s | nginx CPU µs/conn | ÷ plain | nginx core | client core | p50 / p99 ms | resumed |', '|---|--:|--:|--:|--:|--:|--:|--:|');
    const plain = r.edge.find((e) => e.connection.startsWith('plain'));
    for (const e of r.edge) {
      out.push(`| ${e.connection} | ${fmt(e.perSec)} | ${fmt(e.nginxUsPerConn)} | ${fx(ratio(e.nginxUsPerConn, plain?.nginxUsPerConn))} | ${fmt(e.nginxCores, 2)} | ${fmt(e.clientCores, 2)} | ${lat(e.latency)} | ${e.connection.startsWith('plain') ? '' : `${fmt(e.resumedShare * 100)}%`} |`);
    }
    out.push('');
  }
  out.push('#### Goals (issue 17), from the figures above', '');
  for (const g of goals(r)) out.push(`- [${g.met === null ? 'not measured' : g.met ? 'met' : 'NOT met'}] ${g.what}: ${g.value}`);
  if (r.notes.length) {
    out.push('', '#### Notes on this run', '');
    for (const n of r.notes) out.push(`- ${n}`);
  }
  out.push('');
  return out.join('\n');
}

function pct(share: number | undefined): string {
  return share === undefined || !Number.isFinite(share) ? 'n/a' : `${(share * 100).toFixed(0)}%`;
}

function sum(t: Record<string, number> | undefined): number {
  return t ? Object.values(t).reduce((a, b) => a + b, 0) : NaN;
}

/** Warnings a reader needs before trusting a figure: unexpected outcomes, a saturated client. */
export function checkRow(label: string, f: ServerFigures | undefined): string[] {
  if (!f) return [];
  const notes: string[] = [];
  const share = expectedShare(f);
  if (share < 0.99) notes.push(`${label}: only ${(share * 100).toFixed(1)}% of the outcomes were ${f.expected} (${JSON.stringify(f.tally)})`);
  if (f.clientCores >= 0.9) notes.push(`${label}: the load generator used ${(f.clientCores * 100).toFixed(0)}% of a core; it may have set the pace`);
  if (f.serverWaitShare >= 0.1) notes.push(`${label}: the server's event loop waited for a CPU ${(f.serverWaitShare * 100).toFixed(0)}% of the window (a busy machine): its figures read low`);
  return notes;
}
