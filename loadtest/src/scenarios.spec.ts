import { readdirSync } from 'node:fs';
import { formatDuration, parseDuration, rampTarget, scaleScenarios, scenarioDurationMs, type RampingVus } from './scenario-scale';
import { loadScenarioFile, scenariosDir } from './scenarios';

describe('scenario files', () => {
  it('every file in loadtest/scenarios is valid k6 options.scenarios data', () => {
    const names = readdirSync(scenariosDir).filter((f) => f.endsWith('.json'));
    expect(names.sort()).toEqual(['baseline.json', 's0.json', 's1.json', 's2.json']);
    for (const n of names) expect(() => loadScenarioFile(n.replace('.json', ''))).not.toThrow();
  });

  it('hold the seed plan: S0 1,100 constant, S1 the five-stage ramp to 2,000, S2 5 abusers at 50 ms plus one normal user', () => {
    expect(loadScenarioFile('s0').scenarios['s0_constant']).toMatchObject({ executor: 'constant-vus', vus: 1100 });
    const s1 = loadScenarioFile('s1').scenarios['s1_ramp'] as RampingVus;
    expect(s1.stages).toEqual([
      { duration: '30s', target: 100 },
      { duration: '1m', target: 500 },
      { duration: '2m', target: 1000 },
      { duration: '1m', target: 2000 },
      { duration: '30s', target: 0 },
    ]);
    const s2 = loadScenarioFile('s2').scenarios;
    expect(s2['s2_abusers']).toMatchObject({ executor: 'constant-arrival-rate', rate: 100, timeUnit: '1s', env: { USERS: '5' } });
    expect(s2['s2_normal_user']).toMatchObject({ executor: 'constant-vus', vus: 1 });
  });

  it('rejects a file with a key k6 would not know', () => {
    expect(() => loadScenarioFile(`${__dirname}/../project.json`)).toThrow();
  });
});

describe('scaling', () => {
  it('parses and formats k6 durations', () => {
    expect(parseDuration('2m30s')).toBe(150_000);
    expect(parseDuration('1500ms')).toBe(1_500);
    expect(parseDuration('1h')).toBe(3_600_000);
    expect(() => parseDuration('5 minutes')).toThrow();
    expect(formatDuration(33_000)).toBe('33s');
    expect(formatDuration(2_400)).toBe('2400ms');
  });

  it('shortens every stage by the time factor and keeps arrival rates', () => {
    const s1 = scaleScenarios(loadScenarioFile('s1').scenarios, { time: 0.1, vus: 1 });
    expect(scenarioDurationMs(s1['s1_ramp'] as RampingVus)).toBe(30_000);
    expect((s1['s1_ramp'] as RampingVus).stages.map((s) => s.target)).toEqual([100, 500, 1000, 2000, 0]);
    const s2 = scaleScenarios(loadScenarioFile('s2').scenarios, { time: 0.1, vus: 0.25 });
    expect(s2['s2_abusers']).toMatchObject({ rate: 100, duration: '6s' });
    expect(s2['s2_normal_user']).toMatchObject({ vus: 1, duration: '6s', gracefulStop: '3s' });
  });

  it('scales closed-model VU counts, never to zero users', () => {
    const s0 = scaleScenarios(loadScenarioFile('s0').scenarios, { time: 1, vus: 0.25 });
    expect(s0['s0_constant']).toMatchObject({ vus: 275 });
    const base = scaleScenarios(loadScenarioFile('baseline').scenarios, { time: 1, vus: 0.01 });
    expect(base['baseline']).toMatchObject({ vus: 1 });
  });

  it('interpolates a ramp linearly between stages, as k6 does', () => {
    const s1 = loadScenarioFile('s1').scenarios['s1_ramp'] as RampingVus;
    expect(rampTarget(s1, 0)).toBe(0);
    expect(rampTarget(s1, 15_000)).toBe(50);
    expect(rampTarget(s1, 30_000)).toBe(100);
    expect(rampTarget(s1, 60_000)).toBe(300);
    expect(rampTarget(s1, 240_000)).toBe(1500);
    expect(rampTarget(s1, 270_000)).toBe(2000);
    expect(rampTarget(s1, 285_000)).toBe(1000);
    expect(rampTarget(s1, 300_000)).toBe(0);
  });
});
