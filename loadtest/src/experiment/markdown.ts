import type { ExperimentResult } from './experiment';
import { acceptance, configFigures, rolesOf, type RunFigures } from './figures';

function t(ms: number | null): string {
  if (ms === null) return '–';
  return ms >= 1_000 ? `${(ms / 1_000).toFixed(1)} s` : `${Math.round(ms)} ms`;
}

function row(f: RunFigures | null | undefined): string {
  if (!f) return 'not run';
  const parts = [
    `TTFT p50/p95 ${t(f.ttftP50)}/${t(f.ttftP95)}`,
    `done ${f.completed} (${f.completedPerSec}/s${f.completedPerSecSaturated !== null ? `, ${f.completedPerSecSaturated}/s saturated` : ''})`,
    `status 0: ${f.status0}`,
  ];
  if (f.otherErrors) parts.push(`errors ${f.otherErrors}`);
  if (f.refused429 + f.refused503) {
    const late = f.refusalsAfterOpening < f.refused429 + f.refused503 && f.refusalAfterOpeningP99 !== null ? ` (after the first 10 s: ${t(f.refusalAfterOpeningP99)})` : '';
    parts.push(`429: ${f.refused429}, 503: ${f.refused503}, refusal p99 ${t(f.refusalP99)}${late}`);
  }
  parts.push(`answer max ${t(f.answerMax)}`);
  return parts.join('; ');
}

/** The report's table and acceptance as Markdown (for BENCHMARKS.md), from the same figures. */
export function renderMarkdown(x: ExperimentResult): string {
  const out: string[] = [];
  const ids = x.results.map((c) => c.config.id);
  const figs = Object.fromEntries(x.results.map((c) => [c.config.id, configFigures(c)]));
  out.push(`| scenario | seed (before) | ${x.results.map((c) => c.config.label).join(' | ')} |`);
  out.push(`|---|---|${ids.map(() => '---').join('|')}|`);
  for (const s of ['baseline', ...Object.keys(x.seed)]) {
    for (const role of rolesOf(s)) {
      const name = s === 'baseline' ? 'unloaded, 1 user' : `${x.seed[s]?.title ?? s}${rolesOf(s).length > 1 ? ` (${role})` : ''}`;
      const seed = s === 'baseline' || role === 'normal' ? '' : (x.seed[s]?.before ?? '');
      out.push(`| ${name} | ${seed} | ${ids.map((id) => row(figs[id]?.[s]?.[role])).join(' | ')} |`);
    }
  }
  out.push('', '| configuration | acceptance (dam on) | measured | |', '|---|---|---|---|');
  for (const c of acceptance(x)) out.push(`| ${c.config} | ${c.what} | ${c.value} | ${c.pass ? 'met' : '**not met**'} |`);
  const held = x.results.flatMap((c) => Object.entries(c.heldAfter).filter(([, n]) => n !== 0).map(([k, n]) => `${c.config.id} after ${k}: ${n < 0 ? 'unknown (no /dam answer)' : n}`));
  if (held.length) out.push('', `Sessions still held by the gateways after a run had ended and settled (should be 0; the next scenario then ran on a fresh stack): ${held.join('; ')}.`);
  const flagged = x.results.flatMap((c) => Object.entries(c.runs).filter(([, r]) => r.runner.bottleneck).map(([k, r]) => `${c.config.id} ${k} (${r.runner.reasons.join('; ')})`));
  out.push('', flagged.length ? `Runs flagged for the runner's CPU or event-loop delay: ${flagged.join('; ')}.` : 'No run was flagged for the runner\'s CPU or event-loop delay.');
  return `${out.join('\n')}\n`;
}
