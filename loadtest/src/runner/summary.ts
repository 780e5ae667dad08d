import type { LatencySummary, Phase } from './metrics';
import type { RunResult } from './runner';
import { waitFigures } from './waits';

const LABELS: Record<Phase, string> = {
  streamOpen: 'stream_open (GET -> status)',
  session: 'session (GET -> session event)',
  post: 'post (POST -> status)',
  ttft: 'ttft (POST -> first token)',
  done: 'answer (POST -> done)',
  refusal: 'refusal (request -> 429/503)',
  refusalAfterOpening: 'refusal after the first 10 s',
  refusedAfterWait: 'refused after waiting (refused event)',
  iteration: 'iteration (completed)',
};

function fmt(ms: number): string {
  if (ms >= 1_000) return `${(ms / 1_000).toFixed(2)}s`;
  return `${ms.toFixed(ms < 10 ? 2 : 1)}ms`;
}

function latencyLine(label: string, l: LatencySummary): string {
  const dots = '.'.repeat(Math.max(2, 34 - label.length));
  if (l.count === 0) return `     ${label}${dots}: none`;
  return `     ${label}${dots}: avg=${fmt(l.mean)} min=${fmt(l.min)} med=${fmt(l.p50)} p(90)=${fmt(l.p90)} p(95)=${fmt(l.p95)} p(99)=${fmt(l.p99)} max=${fmt(l.max)} count=${l.count}`;
}

/** A k6-like end-of-test summary. */
export function formatSummary(r: RunResult): string {
  const out: string[] = [];
  const secs = r.durationMs / 1_000;
  out.push('', `  scenario: ${r.scenario} — ${r.title}`, `  target:   ${r.baseUrl} over ${r.transport === 'socketio' ? 'Socket.IO (stream = connect, post = ask)' : 'SSE + HTTP'}   started ${r.startedAt}   ran ${secs.toFixed(1)}s   peak VUs ${r.peakVus}`);
  for (const [name, s] of Object.entries(r.scenarios)) out.push(`     * ${name}: ${s.executor} ${JSON.stringify({ ...s, executor: undefined })}`);
  for (const [role, s] of Object.entries(r.roles)) {
    out.push('', `  role ${role}`);
    out.push(
      `     iterations.........................: ${s.iterations}  (${(s.iterations / secs).toFixed(1)}/s)`,
      `     completed answers..................: ${s.outcomes.completed}  (${(s.outcomes.completed / secs).toFixed(1)}/s)`,
      `     refusals (429/503 answers).........: ${s.refused429 + s.refused503}  (429: ${s.refused429}, 503: ${s.refused503})`,
      `     iterations ended refused...........: ${s.outcomes.refused}`,
      `     status 0 (no answer / timeout).....: ${s.status0}`,
      `     other errors.......................: ${s.outcomes.error - s.status0}`,
      `     interrupted at the end.............: ${s.outcomes.interrupted}`,
    );
    for (const [phase, label] of Object.entries(LABELS) as Array<[Phase, string]>) out.push(latencyLine(label, s.latency[phase]));
    out.push('     statuses:');
    for (const [k, v] of Object.entries(s.statuses)) out.push(`       ${k.padEnd(40)} ${v}`);
  }
  if (r.droppedIterations) out.push('', `  dropped iterations (no free VU): ${r.droppedIterations}`);
  if (r.waits) {
    out.push('', `  waiting clients (wait=${r.waitSec} s):`);
    for (const [kind, samples] of [['slot (session line)', r.waits.sessions], ['question (AI queue)', r.waits.questions]] as const) {
      const w = waitFigures(samples);
      const eta = w.etaMedianAbsErrorShare === null ? 'no estimate to judge' : `ETA median abs error ${fmt(w.etaMedianAbsErrorMs ?? 0)} = ${Math.round(w.etaMedianAbsErrorShare * 100)}% of the median wait (over ${w.estimated})`;
      out.push(`     ${kind.padEnd(22)}: ${w.count} waited${w.count ? `, med ${fmt(w.waitedP50 ?? 0)} p(95) ${fmt(w.waitedP95 ?? 0)} max ${fmt(w.waitedMax ?? 0)}; ${eta}` : ''}`);
    }
  }
  const me = r.runner;
  out.push(
    '',
    `  runner: cpu mean ${me.cpuMeanPercent}% of a core (max ${me.cpuMaxPercent}%, ${me.secondsAtCpuLimit} s at the limit), event-loop delay p50 ${me.eventLoopLag.p50} ms p99 ${me.eventLoopLag.p99} ms max ${me.eventLoopLag.max} ms`,
  );
  if (me.bottleneck) out.push(`  WARNING: the runner itself may have been the bottleneck: ${me.reasons.join('; ')}. Its latencies read high.`);
  out.push('');
  return out.join('\n');
}
