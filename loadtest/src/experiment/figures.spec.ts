import { Metrics } from '../runner/metrics';
import type { RunResult } from '../runner/runner';
import { experimentSettings, type ConfigurationResult, type ExperimentResult } from './experiment';
import { acceptance, runFigures } from './figures';

/** A run as the runner would return it, from a Metrics fed by hand. */
function run(feed: (m: Metrics) => void, seconds = 10, startedAt = Date.now()): RunResult {
  const m = new Metrics(startedAt);
  feed(m);
  for (let i = 0; i < seconds; i++) m.tick(10);
  const r: RunResult = {
    scenario: 'x',
    title: 'x',
    baseUrl: 'http://127.0.0.1:1',
    startedAt: new Date().toISOString(),
    durationMs: seconds * 1_000,
    scenarios: {},
    deadlines: { sessionMs: 1, postMs: 1, firstTokenMs: 1, doneMs: 1 },
    roles: m.summaries(),
    seconds: m.seconds,
    droppedIterations: 0,
    peakVus: 10,
    completedPerSec: 0,
    runner: { cpuMeanPercent: 1, cpuMaxPercent: 1, secondsAtCpuLimit: 0, eventLoopLag: { p50: 0, p99: 0, max: 0 }, bottleneck: false, reasons: [], cpuPercentPerSecond: [], lagMaxMsPerSecond: [] },
  };
  m.destroy();
  return r;
}

function answered(m: Metrics, role: string, n: number, ttftMs: number): void {
  for (let i = 0; i < n; i++) {
    m.started(role);
    m.latency(role, 'ttft', ttftMs);
    m.status(role, 'answer done');
    m.outcome(role, 'completed');
  }
}

describe('figures and acceptance', () => {
  it('summarises a role: counts, status 0, refusals and TTFT percentiles', () => {
    const r = run((m) => {
      answered(m, 'user', 100, 300);
      m.started('user');
      m.status('user', '0 ttft_timeout');
      m.outcome('user', 'error', 'status0');
      m.refusal('user', '503');
      m.latency('user', 'refusal', 12);
      m.status('user', 'post 503 ai_overloaded');
    });
    const f = runFigures(r, 'user');
    expect(f).toMatchObject({ completed: 100, status0: 1, refused503: 1, refused429: 0, otherErrors: 0 });
    expect(f?.ttftP95).toBeCloseTo(300, 0);
    expect(f?.refusalP99).toBeCloseTo(12, 0);
    expect(runFigures(r, 'abuser')).toBeNull();
  });

  it('keeps the refusals after the opening 10 s apart, besides the whole run', () => {
    const refuse = (m: Metrics, ms: number) => {
      m.refusal('user', '503');
      m.latency('user', 'refusal', ms);
    };
    const early = runFigures(run((m) => refuse(m, 2_000)), 'user');
    expect(early).toMatchObject({ refusalsAfterOpening: 0, refusalAfterOpeningP99: null });
    expect(early?.refusalP99).toBeCloseTo(2_000, -1);
    const late = runFigures(run((m) => [5, 5, 5].forEach((ms) => refuse(m, ms)), 30, Date.now() - 20_000), 'user');
    expect(late).toMatchObject({ refused503: 3, refusalsAfterOpening: 3 });
    expect(late?.refusalAfterOpeningP99).toBeCloseTo(5, 0);
  });

  it('fails the checks it should: status 0, slow TTFT, a 500 among refusals, abusers not held', () => {
    const settings = experimentSettings(true);
    const base = run((m) => answered(m, 'normal', 10, 220));
    const bad = run((m) => {
      // Over the gate's promise: 220 ms unloaded + the default DAM_MAX_QUEUE_WAIT_MS of 2 s.
      answered(m, 'user', 50, 2_500);
      m.started('user');
      m.outcome('user', 'error', 'status0');
      m.status('user', 'post 500 internal');
    });
    const s2 = run((m) => {
      answered(m, 'abuser', 50, 250);
      answered(m, 'normal', 5, 230);
    });
    const c: ConfigurationResult = {
      config: { id: 'after-1gw', label: 'after', damMode: 'enforce', gateways: 1 },
      runs: { baseline: base, s0: bad, s2 },
      heldAfter: {},
    };
    const x: ExperimentResult = {
      startedAt: '',
      finishedAt: '',
      quick: true,
      machine: { cpus: 2, cpuModel: '', node: '', platform: '', loadavgAtStart: [], loadavgAtEnd: [] },
      settings,
      seed: {},
      results: [c],
    };
    const checks = acceptance(x);
    const verdict = (what: RegExp): boolean | undefined => checks.find((k) => what.test(k.what))?.pass;
    expect(verdict(/no status-0/)).toBe(false);
    expect(verdict(/s0 user: admitted p95 TTFT/)).toBe(false);
    expect(verdict(/s0 user: every refusal is 429 or 503/)).toBe(false);
    expect(verdict(/s0: completed answers\/s once saturated/)).toBe(false);
    expect(verdict(/s2 abusers held/)).toBe(false);
    expect(verdict(/s2 normal: admitted p95 TTFT/)).toBe(true);
    expect(checks.find((k) => /s0 user: admitted p95 TTFT/.test(k.what))?.what).toMatch(/DAM_MAX_QUEUE_WAIT_MS \(2000 ms\)/);
    expect(checks.find((k) => /s2 abusers held/.test(k.what))?.what).toMatch(/at most 5 sessions/);
  });
});
