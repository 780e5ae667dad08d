import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { repoRoot } from '@traffic-dam/stack';
import type { RunResult } from '../runner/runner';
import type { ExperimentResult } from './experiment';
import { acceptance, configFigures, type RunFigures } from './figures';
import type { WaitSample } from '../runner/chat-client';
import { waitFigures } from '../runner/waits';

function esc(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c] as string);
}

function secs(msValue: number | null): string {
  if (msValue === null) return '–';
  return msValue >= 1_000 ? `${(msValue / 1_000).toFixed(2)} s` : `${Math.round(msValue)} ms`;
}

function cell(f: RunFigures | null | undefined): string {
  if (!f) return '<td class="na">not run</td>';
  const rows = [
    `TTFT p50 / p95 / max: <b>${secs(f.ttftP50)}</b> / <b>${secs(f.ttftP95)}</b> / ${secs(f.ttftMax)}`,
    `session p95: ${secs(f.sessionP95)}; answer p95 / max: ${secs(f.answerP95)} / ${secs(f.answerMax)}`,
    `open to done, retries included, p95 / max: ${secs(f.iterationP95)} / ${secs(f.iterationMax)}`,
    `completed: <b>${f.completed}</b> (${f.completedPerSec}/s${f.completedPerSecSaturated !== null ? `; ${f.completedPerSecSaturated}/s saturated` : ''})`,
    `status 0: <b class="${f.status0 ? 'bad' : ''}">${f.status0}</b>; other errors: ${f.otherErrors}`,
    `429: ${f.refused429}; 503: ${f.refused503}; refusal p50 / p99: ${secs(f.refusalP50)} / ${secs(f.refusalP99)}`,
    `peak VUs: ${f.peakVus}${f.runnerBottleneck ? ' <span class="warn">runner saturated</span>' : ''}`,
  ];
  return `<td>${rows.join('<br>')}</td>`;
}

/** Per-second series of every run, trimmed to what the charts draw. */
function chartData(x: ExperimentResult): unknown {
  const out: Record<string, Record<string, unknown>> = {};
  for (const c of x.results) {
    out[c.config.id] = {};
    for (const [k, run] of Object.entries(c.runs) as Array<[string, RunResult]>) {
      const s = run.seconds;
      (out[c.config.id] as Record<string, unknown>)[k] = {
        t: s.map((v) => v.t),
        vus: s.map((v) => v.vus),
        completed: s.map((v) => v.completed),
        ttftP50: s.map((v) => v.ttftP50),
        ttftP95: s.map((v) => v.ttftP95),
        r429: s.map((v) => v.refused429),
        r503: s.map((v) => v.refused503),
        status0: s.map((v) => v.status0),
        errors: s.map((v) => v.errors),
        damUsed: s.map((v) => v.extra['damUsed'] ?? null),
        damCapacity: s.map((v) => v.extra['damCapacity'] ?? null),
        open: s.map((v) => v.extra['openStreams'] ?? null),
        runnerCpu: s.map((v) => v.extra['runnerCpu'] ?? null),
        ...(run.waits ? { waits: { sessions: thin(run.waits.sessions), questions: thin(run.waits.questions) } } : {}),
      };
    }
  }
  return out;
}

/** At most this many waits per series on the page (every nth, in arrival order): the JSON has them all. */
const WAIT_POINTS = 4_000;

/** [arrival s, waited s, estimate s | null], thinned evenly. */
function thin(samples: WaitSample[]): Array<[number, number, number | null]> {
  const step = Math.max(1, Math.ceil(samples.length / WAIT_POINTS));
  const sorted = [...samples].sort((a, b) => a.at - b.at);
  const out: Array<[number, number, number | null]> = [];
  for (let i = 0; i < sorted.length; i += step) {
    const w = sorted[i] as WaitSample;
    out.push([w.at / 1_000, w.waitedMs / 1_000, w.etaMs === null ? null : w.etaMs / 1_000]);
  }
  return out;
}

// Runs in the browser: draws every chart with uPlot from the JSON embedded in the page.
const CHART_SCRIPT = `
const X = JSON.parse(document.getElementById('td-data').textContent);
const COLORS = { before: '#c0392b', after: '#2471a3' };
function align(runs) {
  const n = Math.max(0, ...runs.map(r => r ? Math.ceil(r.t[r.t.length - 1] || 0) : 0)) + 1;
  const xs = Array.from({ length: n }, (_, i) => i);
  return { xs, pick: (r, key) => { const a = new Array(n).fill(null); if (r) r.t.forEach((t, i) => { a[Math.min(n - 1, Math.round(t))] = r[key][i]; }); return a; } };
}
function chart(el, title, yLabel, series, xs) {
  const opts = { title, width: Math.min(560, window.innerWidth - 40), height: 220,
    scales: { x: { time: false } }, axes: [{ label: 's' }, { label: yLabel }],
    series: [{}].concat(series.map(s => ({ label: s.label, stroke: s.color, dash: s.dash, width: 1.5, spanGaps: true }))) };
  new uPlot(opts, [xs].concat(series.map(s => s.data)), el);
}
for (const box of document.querySelectorAll('[data-chart]')) {
  const [scenario, gw, kind] = box.dataset.chart.split('|');
  const before = (X['before-' + gw] || {})[scenario], after = (X['after-' + gw] || {})[scenario];
  const { xs, pick } = align([before, after]);
  const S = [];
  const add = (run, which, key, label, color, dash) => { if (run) S.push({ label: which + ' ' + label, data: pick(run, key), color, dash }); };
  if (kind === 'vus') { add(before, 'before', 'vus', 'VUs', COLORS.before); add(after, 'after', 'vus', 'VUs', COLORS.after); chart(box, 'active VUs', 'VUs', S, xs); }
  if (kind === 'ttft') { add(before, 'before', 'ttftP50', 'p50', COLORS.before, [4, 4]); add(before, 'before', 'ttftP95', 'p95', COLORS.before);
    add(after, 'after', 'ttftP50', 'p50', COLORS.after, [4, 4]); add(after, 'after', 'ttftP95', 'p95', COLORS.after); chart(box, 'TTFT (ms) of answers starting that second', 'ms', S, xs); }
  if (kind === 'completed') { add(before, 'before', 'completed', 'completed/s', COLORS.before); add(after, 'after', 'completed', 'completed/s', COLORS.after);
    S.push({ label: 'AI capacity', data: xs.map(() => X.__capacity), color: '#7f8c8d', dash: [2, 6] }); chart(box, 'completed answers per second', '/s', S, xs); }
  if (kind === 'errors') { add(before, 'before', 'status0', 'status 0', COLORS.before); add(before, 'before', 'errors', 'other errors', '#e67e22');
    add(after, 'after', 'r429', '429', COLORS.after); add(after, 'after', 'r503', '503', '#8e44ad'); add(after, 'after', 'status0', 'status 0', '#000000'); add(after, 'after', 'errors', 'other errors', '#16a085');
    add(before, 'before', 'r429', '429', '#f1948a', [4, 4]); add(before, 'before', 'r503', '503', '#d7bde2', [4, 4]); chart(box, '429 / 503 / status 0 / errors per second', '/s', S, xs); }
  if (kind === 'refusals') { const twin = (X[box.dataset.twin] || {})[scenario], w = (X[box.dataset.config] || {})[scenario];
    const A = align([twin, w]); const sum = (r) => r ? A.pick(r, 'r429').map((v, i) => v === null ? null : v + (A.pick(r, 'r503')[i] || 0)) : [];
    const S2 = []; if (twin) S2.push({ label: box.dataset.twin + ' 429+503', data: sum(twin), color: COLORS.before }); if (w) S2.push({ label: box.dataset.config + ' 429+503', data: sum(w), color: COLORS.after });
    chart(box, 'refusals (each a comeback) per second, without and with waiting', '/s', S2, A.xs); }
  if (kind === 'waitByArrival' || kind === 'etaVsActual') { const w = ((X[box.dataset.config] || {})[scenario] || {}).waits; if (!w) continue;
    const which = box.dataset.which, pts = w[which] || []; if (!pts.length) { box.textContent = 'no ' + which + ' waited'; continue; }
    const dots = { paths: () => null, points: { show: true, size: 3 } };
    if (kind === 'waitByArrival') { const xs = pts.map(p => p[0]);
      new uPlot({ title: 'wait for ' + (which === 'sessions' ? 'a slot' : 'an answer') + ' by arrival (s)', width: Math.min(560, window.innerWidth - 40), height: 220, scales: { x: { time: false } },
        axes: [{ label: 'arrived at (s into the run)' }, { label: 'waited (s)' }], series: [{}, { label: 'waited', stroke: COLORS.after, ...dots }] }, [xs, pts.map(p => p[1])], box); }
    else { const e = pts.filter(p => p[2] !== null).sort((a, b) => a[2] - b[2]); if (!e.length) { box.textContent = 'no estimate told'; continue; }
      new uPlot({ title: 'ETA told against the actual wait (s), ' + (which === 'sessions' ? 'slots' : 'answers'), width: Math.min(560, window.innerWidth - 40), height: 220, scales: { x: { time: false } },
        axes: [{ label: 'ETA told (s)' }, { label: 'actual (s)' }], series: [{}, { label: 'actual', stroke: COLORS.after, ...dots }, { label: 'actual = ETA', stroke: '#7f8c8d', dash: [2, 6] }] },
        [e.map(p => p[2]), e.map(p => p[1]), e.map(p => p[2])], box); } }
  if (kind === 'dam') { add(after, 'after', 'damUsed', 'dam used', COLORS.after); add(after, 'after', 'damCapacity', 'dam capacity', '#7f8c8d', [2, 6]);
    add(before, 'before', 'open', 'open streams (no dam)', COLORS.before); add(after, 'after', 'open', 'open streams', '#5dade2', [4, 4]);
    chart(box, 'sessions: dam used vs capacity (GET /dam), open streams (/metrics)', 'sessions', S, xs); }
}
`;

const CSS = `
body { font: 14px/1.45 system-ui, sans-serif; margin: 24px; color: #222; }
h1 { font-size: 22px; } h2 { font-size: 18px; margin-top: 32px; } h3 { font-size: 15px; }
table { border-collapse: collapse; margin: 8px 0 16px; } td, th { border: 1px solid #ccc; padding: 6px 8px; vertical-align: top; font-size: 13px; }
th { background: #f4f6f7; text-align: left; } .bad { color: #c0392b; } .warn { color: #b9770e; font-weight: bold; } .na { color: #999; }
.pass { color: #1e8449; font-weight: bold; } .fail { color: #c0392b; font-weight: bold; }
.charts { display: flex; flex-wrap: wrap; gap: 12px; } .charts > div { border: 1px solid #eee; }
code, pre { background: #f7f7f7; } pre { padding: 8px; overflow: auto; font-size: 12px; }
`;

/** One self-contained HTML page: uPlot and the data inline, no network. */
export function renderReport(x: ExperimentResult): string {
  const root = repoRoot(__dirname);
  const uplotJs = readFileSync(join(root, 'node_modules/uplot/dist/uPlot.iife.min.js'), 'utf8');
  const uplotCss = readFileSync(join(root, 'node_modules/uplot/dist/uPlot.min.css'), 'utf8');
  const byId = Object.fromEntries(x.results.map((c) => [c.config.id, c]));
  const figs = Object.fromEntries(x.results.map((c) => [c.config.id, configFigures(c)]));
  const known = ['before-1gw', 'after-1gw', 'before-2gw', 'after-2gw'];
  const order = [...known.filter((id) => byId[id]), ...Object.keys(byId).filter((id) => !known.includes(id))];
  const scenarios = Object.keys(x.seed);
  const gwCounts = [...new Set(x.results.map((c) => c.config.gateways))];
  const checks = acceptance(x);
  const data = { ...(chartData(x) as object), __capacity: x.settings.aiCapacityPerSec };

  const table = [
    '<table><tr><th>scenario</th><th>seed: before (6-core laptop, 1 instance)</th>',
    ...order.map((id) => `<th>${esc(byId[id]?.config.label ?? id)}</th>`),
    '</tr>',
    ...['baseline', ...scenarios].flatMap((s) => {
      const roles = s === 's2' ? ['abuser', 'normal'] : s === 'baseline' ? ['normal'] : ['user'];
      return roles.map(
        (role) =>
          `<tr><th>${esc(s === 'baseline' ? 'unloaded (1 user)' : x.seed[s]?.title ?? s)}${roles.length > 1 ? ` — ${role}` : ''}</th><td>${esc(
            s === 'baseline' ? '' : role === 'normal' ? '(not measured)' : x.seed[s]?.before ?? '',
          )}</td>${order.map((id) => (byId[id]?.error ? `<td class="bad">${esc(byId[id]?.error ?? '')}</td>` : cell(figs[id]?.[s]?.[role]))).join('')}</tr>`,
      );
    }),
    '</table>',
  ].join('\n');

  const checksTable = [
    '<table><tr><th>configuration</th><th>acceptance (dam on)</th><th>measured</th><th></th></tr>',
    ...checks.map((c) => `<tr><td>${esc(c.config)}</td><td>${esc(c.what)}</td><td>${esc(c.value)}</td><td class="${c.pass ? 'pass' : 'fail'}">${c.pass ? 'met' : 'not met'}</td></tr>`),
    '</table>',
  ].join('\n');

  const leftovers = x.results
    .flatMap((c) => Object.entries(c.heldAfter).filter(([, n]) => n !== 0).map(([k, n]) => `${c.config.id} after ${k}: ${n < 0 ? 'unknown (no /dam answer)' : n}`))
    .join('; ');
  const runnerFlags = x.results
    .flatMap((c) => Object.entries(c.runs).filter(([, r]) => r.runner.bottleneck).map(([k, r]) => `${c.config.id} ${k}: ${r.runner.reasons.join('; ')}`));

  const charts = scenarios
    .flatMap((s) =>
      gwCounts.map(
        (gw) =>
          `<h3>${esc(x.seed[s]?.title ?? s)} — ${gw} gateway${gw > 1 ? 's' : ''}: before (red) beside after (blue)</h3><div class="charts">${['vus', 'ttft', 'completed', 'errors', 'dam']
            .map((kind) => `<div data-chart="${s}|${gw}gw|${kind}"></div>`)
            .join('')}</div>`,
      ),
    )
    .join('\n');

  const waiting = x.results.filter((c) => c.config.waitSec !== undefined);
  const waitSection = waiting
    .map((c) => {
      const twin = x.results.find((r) => r.config.waitSec === undefined && r.config.damMode === c.config.damMode && r.config.gateways === c.config.gateways);
      return Object.entries(c.runs)
        .filter(([k]) => k !== 'baseline')
        .map(([k, run]) => {
          const figs = (['sessions', 'questions'] as const).map((which) => {
            const w = waitFigures(run.waits?.[which] ?? []);
            const eta = w.etaMedianAbsErrorShare === null ? 'no estimate to judge' : `ETA median absolute error ${secs(w.etaMedianAbsErrorMs)} = ${Math.round(w.etaMedianAbsErrorShare * 100)}% of the median wait (${w.estimated} judged)`;
            return `${which === 'sessions' ? 'a slot' : 'an answer'}: ${w.count} waits, median ${secs(w.waitedP50)}, p95 ${secs(w.waitedP95)}, max ${secs(w.waitedMax)}; ${eta}`;
          });
          const boxes = [
            twin ? `<div data-chart="${k}|x|refusals" data-config="${c.config.id}" data-twin="${twin.config.id}"></div>` : '',
            ...(['sessions', 'questions'] as const).flatMap((which) => [
              `<div data-chart="${k}|x|waitByArrival" data-config="${c.config.id}" data-which="${which}"></div>`,
              `<div data-chart="${k}|x|etaVsActual" data-config="${c.config.id}" data-which="${which}"></div>`,
            ]),
          ].join('');
          return `<h3>${esc(x.seed[k]?.title ?? k)} — ${esc(c.config.label)}</h3><p>${figs.map(esc).join('<br>')}</p><div class="charts">${boxes}</div>`;
        })
        .join('\n');
    })
    .join('\n');

  const env = Object.entries(x.settings.env)
    .filter(([k]) => k !== 'AUTH_JWT_SECRET')
    .map(([k, v]) => `${k}=${v}`)
    .join(' ');
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Traffic Dam: before and after</title>
<style>${uplotCss}</style><style>${CSS}</style></head><body>
<h1>Traffic Dam: the seed's experiment, before and after${x.quick ? ' (quick mode)' : ''}</h1>
<p>Run ${esc(x.startedAt)} to ${esc(x.finishedAt)} on ${x.machine.cpus} CPUs (${esc(x.machine.cpuModel)}), Node ${esc(x.machine.node)}, ${esc(
    x.machine.platform,
  )}; load average ${x.machine.loadavgAtStart.join(' / ')} at the start, ${x.machine.loadavgAtEnd.join(' / ')} at the end.
Load runner, nginx, gateways, Redis and the worker share this machine.${x.tls ? ' Clients reach nginx over HTTPS (TLS with session resumption).' : ''}</p>
<p>Scale: durations ×${x.settings.scale.time}, VUs ×${x.settings.scale.vus}. AI capacity (simulated LLM): <b>${x.settings.aiCapacityPerSec} answers/s</b>.
Session slots per gateway: ${x.settings.slotsPerInstance}. Every configuration runs on a fresh stack (Redis, 1 worker, N gateways, nginx) with:
<code>${esc(env)}</code> and <code>DAM_MODE=off</code> (before) or <code>enforce</code> (after). Each user has its own JWT.
Status 0 = no HTTP answer, or no session / first token / done within 10 s / 30 s / 60 s.</p>
<h2>Results (the seed's table, before beside after)</h2>
${table}
<h2>Acceptance</h2>
${checksTable}
${leftovers ? `<p class="warn">Sessions the gateways still held after a run had ended and settled (should be 0; a gateway leaking slots; the next scenario then ran on a fresh stack): ${esc(leftovers)}</p>` : ''}
${runnerFlags.length ? `<p class="warn">Runs in which the load runner (or a machine too busy to schedule it) may have set the pace: ${esc(runnerFlags.join(' | '))}</p>` : '<p>The load runner was not the bottleneck in any run (CPU and event-loop delay below their limits).</p>'}
<h2>Over time</h2>
${charts}
${waitSection ? `<h2 id="waiting">Waiting clients: refusals, wait by arrival, ETA against actual</h2>\n<p>Waiting clients offer to wait (GET /chat/stream?wait=N, Prefer: wait=N on the question) instead of being refused; each wait is drawn from its first <code>queued</code> event (the position and ETA it was told) to its <code>session</code> (a slot) or first token (an answer).</p>\n${waitSection}` : ''}
<h2>Data</h2>
<p>The full results (every run's per-second series, histograms' summaries, statuses) are in the JSON written beside this page.</p>
<script id="td-data" type="application/json">${JSON.stringify(data).replace(/</g, '\\u003c')}</script>
<script>${uplotJs}</script>
<script>${CHART_SCRIPT}</script>
</body></html>
`;
}
