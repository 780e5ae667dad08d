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

  it('judges waiting clients against the same configuration without waiting: refusals ten times fewer, saturation by questions waiting, the ETA within 25%', () => {
    const settings = experimentSettings(true);
    const cap = settings.aiCapacityPerSec;
    const base = run((m) => answered(m, 'normal', 10, 220));
    // Without waiting: 60 refusals/s; the AI saturated (the gate refused) at capacity.
    const refusing = run((m) => {
      for (let i = 0; i < 600; i++) m.refusal('user', '503');
      answered(m, 'user', cap * 10, 300);
    });
    // With waiting: 2 refusals/s; questions waited every second, answers at capacity; ETAs off by 10-20%.
    const waiting = run((m) => {
      for (let i = 0; i < 20; i++) m.refusal('user', '429');
      answered(m, 'user', cap * 10, 5_000);
    });
    for (const s of waiting.seconds) s.queuedQuestions = 5;
    for (const s of waiting.seconds) s.completed = cap;
    for (const s of refusing.seconds) {
      s.refused503 = 60;
      s.completed = cap;
    }
    waiting.waits = {
      sessions: [],
      questions: [5_000, 6_000, 7_000, 8_000].map((w, i) => ({ at: i, position: 200, etaMs: w * (i % 2 ? 1.1 : 0.85), waitedMs: w })),
    };
    const cfg = (id: string, waitSec?: number): ConfigurationResult['config'] => ({ id, label: id, damMode: 'enforce', gateways: 2, ...(waitSec ? { waitSec } : {}) });
    const x: ExperimentResult = {
      startedAt: '',
      finishedAt: '',
      quick: true,
      machine: { cpus: 2, cpuModel: '', node: '', platform: '', loadavgAtStart: [], loadavgAtEnd: [] },
      settings,
      seed: {},
      results: [
        { config: cfg('after-2gw'), runs: { baseline: base, s1: refusing }, heldAfter: {} },
        { config: cfg('after-2gw-wait', 60), runs: { baseline: base, s1: waiting }, heldAfter: {} },
      ],
    };
    const checks = acceptance(x).filter((k) => k.config === 'after-2gw-wait');
    const verdict = (what: RegExp): boolean | undefined => checks.find((k) => what.test(k.what))?.pass;
    expect(verdict(/s1: refusals and comebacks per second at least 10x fewer/)).toBe(true);
    expect(verdict(/s1: completed answers\/s once saturated/)).toBe(true);
    expect(verdict(/s1: the ETA's median absolute error for an answer/)).toBe(true);
    // Waiting clients' TTFT is their wait: not judged against the unloaded one.
    expect(checks.some((k) => /admitted p95 TTFT/.test(k.what))).toBe(false);
    // Estimates twice off fail; so do refusals only 3x fewer.
    waiting.waits.questions = waiting.waits.questions.map((w) => ({ ...w, etaMs: w.waitedMs * 2 }));
    const user = waiting.roles['user'];
    if (user) user.refused429 += 180;
    const again = acceptance(x).filter((k) => k.config === 'after-2gw-wait');
    expect(again.find((k) => /ETA's median/.test(k.what))?.pass).toBe(false);
    expect(again.find((k) => /10x fewer/.test(k.what))?.pass).toBe(false);
  });
});
