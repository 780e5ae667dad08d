import type { RoleSummary, Second } from '../runner/metrics';
import { OPENING_MS } from '../runner/metrics';
import type { RunResult } from '../runner/runner';
import { waitFigures } from '../runner/waits';
import { PRODUCT_DEFAULTS, type ConfigurationResult, type ExperimentResult } from './experiment';

/** The figures of one scenario run in one configuration (the table's cell). */
export interface RunFigures {
  role: string;
  iterations: number;
  completed: number;
  completedPerSec: number;
  /** Mean completed answers/s over the seconds in which the AI gate refused (the queue was full). */
  completedPerSecSaturated: number | null;
  saturatedSeconds: number;
  status0: number;
  refused429: number;
  refused503: number;
  otherErrors: number;
  ttftP50: number | null;
  ttftP95: number | null;
  ttftMax: number | null;
  sessionP95: number | null;
  answerP95: number | null;
  answerMax: number | null;
  refusalP50: number | null;
  refusalP99: number | null;
  /** Refusals answered after the run's first 10 s (past the opening burst of a constant-VU run). */
  refusalAfterOpeningP99: number | null;
  refusalsAfterOpening: number;
  /** Completed iterations from opening the stream to `done`, retries after refusals included. */
  iterationP95: number | null;
  iterationMax: number | null;
  peakVus: number;
  runnerBottleneck: boolean;
  statuses: Record<string, number>;
}

export interface Check {
  config: string;
  what: string;
  value: string;
  pass: boolean;
}

function ms(n: number, count: number): number | null {
  return count > 0 ? n : null;
}

/**
 * Seconds in which the AI queue was full, past the first two (warm-up) and before the run's end:
 * the gate refused a question, or (waiting clients) a question waited behind others.
 */
function saturated(seconds: Second[]): Second[] {
  return seconds.slice(2, -1).filter((s) => s.refused503 > 0 || (s.queuedQuestions ?? 0) > 0);
}

export function runFigures(run: RunResult, role: string): RunFigures | null {
  const r: RoleSummary | undefined = run.roles[role];
  if (!r) return null;
  // The whole run's throughput: only meaningful for the scenario's users, not S2's two roles.
  const sat = role === 'user' ? saturated(run.seconds) : [];
  const l = r.latency;
  return {
    role,
    iterations: r.iterations,
    completed: r.outcomes.completed,
    completedPerSec: Math.round((r.outcomes.completed / (run.durationMs / 1_000)) * 10) / 10,
    completedPerSecSaturated: sat.length ? Math.round((sat.reduce((n, s) => n + s.completed, 0) / sat.length) * 10) / 10 : null,
    saturatedSeconds: sat.length,
    status0: r.status0,
    refused429: r.refused429,
    refused503: r.refused503,
    otherErrors: r.outcomes.error - r.status0,
    ttftP50: ms(l.ttft.p50, l.ttft.count),
    ttftP95: ms(l.ttft.p95, l.ttft.count),
    ttftMax: ms(l.ttft.max, l.ttft.count),
    sessionP95: ms(l.session.p95, l.session.count),
    answerP95: ms(l.done.p95, l.done.count),
    answerMax: ms(l.done.max, l.done.count),
    refusalP50: ms(l.refusal.p50, l.refusal.count),
    refusalP99: ms(l.refusal.p99, l.refusal.count),
    refusalAfterOpeningP99: ms(l.refusalAfterOpening.p99, l.refusalAfterOpening.count),
    refusalsAfterOpening: l.refusalAfterOpening.count,
    iterationP95: ms(l.iteration.p95, l.iteration.count),
    iterationMax: ms(l.iteration.max, l.iteration.count),
    peakVus: run.peakVus,
    runnerBottleneck: run.runner.bottleneck,
    statuses: r.statuses,
  };
}

/** The main role of a scenario: its users; S2's abusers and normal user are shown apart. */
export function rolesOf(scenario: string): string[] {
  return scenario === 's2' ? ['abuser', 'normal'] : scenario === 'baseline' ? ['normal'] : ['user'];
}

/** Refusal p99 a user should see at most, in ms: "quick" made a number. */
export const REFUSAL_P99_LIMIT_MS = 100;
export const SATURATION_SHARE = 0.95;
/** Waiting clients: refusals and comebacks at least this many times fewer than without waiting. */
export const WAIT_REFUSAL_FACTOR = 10;
/** Waiting clients: the ETA's median absolute error at most this share of the median actual wait. */
export const ETA_ERROR_SHARE = 0.25;

/** Refusals (each one a comeback) per second of a run, of its users. */
function refusalsPerSec(run: RunResult, role: string): number {
  const r = run.roles[role];
  return r ? (r.refused429 + r.refused503) / (run.durationMs / 1_000) : 0;
}

/** The issue's acceptance, measured, for each "after" configuration. */
export function acceptance(x: ExperimentResult): Check[] {
  const checks: Check[] = [];
  const cap = x.settings.aiCapacityPerSec;
  // The gate's promise: a question is accepted only if its estimated wait in line fits this.
  const promiseMs = Number(x.settings.env['DAM_MAX_QUEUE_WAIT_MS'] ?? PRODUCT_DEFAULTS.DAM_MAX_QUEUE_WAIT_MS);
  const maxSessions = x.settings.env['DAM_USER_MAX_SESSIONS'] ?? String(PRODUCT_DEFAULTS.DAM_USER_MAX_SESSIONS);
  for (const c of x.results.filter((r) => r.config.damMode === 'enforce')) {
    const id = c.config.id;
    if (c.error) {
      checks.push({ config: id, what: 'the configuration ran', value: c.error, pass: false });
      continue;
    }
    const base = c.runs['baseline'] ? runFigures(c.runs['baseline'], 'normal') : null;
    const loaded = Object.keys(c.runs).filter((k) => k !== 'baseline');
    const status0 = loaded.reduce((n, k) => n + Object.values((c.runs[k] as RunResult).roles).reduce((m, r) => m + r.status0, 0), 0);
    checks.push({ config: id, what: 'no status-0 / timed-out requests (all scenarios)', value: String(status0), pass: status0 === 0 });
    for (const k of loaded) {
      const run = c.runs[k] as RunResult;
      for (const role of rolesOf(k)) {
        const f = runFigures(run, role);
        if (!f) continue;
        if (f.refusalP99 !== null) {
          checks.push({
            config: id,
            what: `${k} ${role}: refusals are quick (p99 <= ${REFUSAL_P99_LIMIT_MS} ms)`,
            value: `p50 ${f.refusalP50} ms, p99 ${f.refusalP99} ms over ${f.refused429 + f.refused503} refusals`,
            pass: f.refusalP99 <= REFUSAL_P99_LIMIT_MS,
          });
        }
        // Reported beside the whole run's figure, not instead of it: where the slow refusals are.
        if (f.refusalAfterOpeningP99 !== null && f.refusalsAfterOpening < f.refused429 + f.refused503) {
          checks.push({
            config: id,
            what: `${k} ${role}: refusals after the first ${OPENING_MS / 1_000} s are quick (p99 <= ${REFUSAL_P99_LIMIT_MS} ms)`,
            value: `p99 ${f.refusalAfterOpeningP99} ms over ${f.refusalsAfterOpening} refusals`,
            pass: f.refusalAfterOpeningP99 <= REFUSAL_P99_LIMIT_MS,
          });
        }
        const refusedOther = Object.entries(f.statuses).filter(([s]) => /^(stream|post) (4|5)\d\d /.test(s) && !/^(stream|post) (429|503) /.test(s));
        if (role !== 'abuser') {
          checks.push({
            config: id,
            what: `${k} ${role}: every refusal is 429 or 503`,
            value: refusedOther.length ? refusedOther.map(([s, n]) => `${s}: ${n}`).join(', ') : 'yes',
            pass: refusedOther.length === 0,
          });
        }
        // Waiting clients wait in the AI queue instead of being refused: their TTFT is that wait (judged below).
        if (role !== 'abuser' && base?.ttftP95 != null && c.config.waitSec === undefined) {
          checks.push({
            config: id,
            what: `${k} ${role}: admitted p95 TTFT within the gate's promise: unloaded (${base.ttftP95} ms) + DAM_MAX_QUEUE_WAIT_MS (${promiseMs} ms)`,
            value: f.ttftP95 === null ? 'no answer' : `${f.ttftP95} ms (+${Math.round(f.ttftP95 - base.ttftP95)} ms)`,
            pass: f.ttftP95 !== null && f.ttftP95 <= base.ttftP95 + promiseMs,
          });
        }
        if (role === 'user') {
          checks.push({
            config: id,
            what: `${k}: completed answers/s once saturated >= ${SATURATION_SHARE * 100}% of AI capacity (${cap}/s)`,
            value: f.completedPerSecSaturated === null ? 'never saturated' : `${f.completedPerSecSaturated}/s over ${f.saturatedSeconds} s (${Math.round((f.completedPerSecSaturated / cap) * 100)}%)`,
            pass: f.completedPerSecSaturated !== null && f.completedPerSecSaturated >= SATURATION_SHARE * cap,
          });
        }
        if (role === 'user' && c.config.waitSec !== undefined) checks.push(...waitChecks(x, c, k, run));
        if (role === 'abuser') {
          const minutes = Math.max(1, Math.ceil(run.durationMs / 60_000));
          const perUser = f.completed / 5;
          const limit = Number(x.settings.env['DAM_USER_QUESTIONS']) * minutes;
          const limited = Object.entries(f.statuses).filter(([s]) => / 429 user_/.test(s)).reduce((n, [, v]) => n + v, 0);
          checks.push({
            config: id,
            what: `s2 abusers held to their per-user limits (<= ${limit} answers each in ${minutes} window(s), at most ${maxSessions} sessions)`,
            value: `${Math.round(perUser)} answers per abuser; ${limited} refusals by per-user limits of ${f.iterations} attempts`,
            pass: perUser <= limit && limited > 0,
          });
        }
      }
    }
  }
  return checks;
}

/** Waiting clients against the same configuration without waiting: refusals, and the estimates they were told. */
function waitChecks(x: ExperimentResult, c: ConfigurationResult, scenario: string, run: RunResult): Check[] {
  const id = c.config.id;
  const out: Check[] = [];
  const twin = x.results.find(
    (r) => r.config.waitSec === undefined && r.config.damMode === c.config.damMode && r.config.gateways === c.config.gateways && (r.config.transport ?? 'sse') === (c.config.transport ?? 'sse'),
  );
  const twinRun = twin?.runs[scenario];
  if (twinRun) {
    const without = refusalsPerSec(twinRun, 'user');
    const withWait = refusalsPerSec(run, 'user');
    out.push({
      config: id,
      what: `${scenario}: refusals and comebacks per second at least ${WAIT_REFUSAL_FACTOR}x fewer than ${twin?.config.id} (no waiting)`,
      value: `${withWait.toFixed(2)}/s against ${without.toFixed(2)}/s (${withWait > 0 ? `${(without / withWait).toFixed(1)}x fewer` : 'none'})`,
      pass: withWait * WAIT_REFUSAL_FACTOR <= without && without > 0,
    });
  }
  for (const [kind, samples] of [['a slot (session line)', run.waits?.sessions ?? []], ['an answer (AI queue)', run.waits?.questions ?? []]] as const) {
    const w = waitFigures(samples);
    if (w.estimated === 0) {
      // Waits long enough to judge an estimate, and none was told one: the line did not know its pace.
      const long = samples.filter((s) => s.waitedMs >= 1_000).length;
      if (long > 0) out.push({ config: id, what: `${scenario}: waits for ${kind} were told an estimate`, value: `${long} waits of 1 s or more, none told an estimate`, pass: false });
      continue;
    }
    out.push({
      config: id,
      what: `${scenario}: the ETA's median absolute error for ${kind} within ${ETA_ERROR_SHARE * 100}% of the actual wait`,
      value: `${Math.round(w.etaMedianAbsErrorMs ?? 0)} ms = ${Math.round((w.etaMedianAbsErrorShare ?? 0) * 100)}% of the median wait ${Math.round((w.waitedP50 ?? 0) / 100) / 10} s (over ${w.estimated} of ${w.count} waits; per-wait median relative error ${Math.round((w.etaMedianRelativeError ?? 0) * 100)}%)`,
      pass: (w.etaMedianAbsErrorShare ?? 1) <= ETA_ERROR_SHARE,
    });
  }
  return out;
}

export function configFigures(c: ConfigurationResult): Record<string, Record<string, RunFigures | null>> {
  const out: Record<string, Record<string, RunFigures | null>> = {};
  for (const [k, run] of Object.entries(c.runs)) out[k] = Object.fromEntries(rolesOf(k).map((role) => [role, runFigures(run, role)]));
  return out;
}
