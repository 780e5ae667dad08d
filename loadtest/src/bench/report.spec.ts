import type { LatencySummary } from './clients';
import { checkRow, expectedShare, goals, ratio, renderMarkdown, type BenchResult, type ServerFigures } from './report';

const lat: LatencySummary = { count: 100, p50: 1, p90: 2, p99: 3, max: 4 };

function fig(perSec: number, over: Partial<ServerFigures> = {}): ServerFigures {
  return { perSec, latency: lat, cpuUsPerOp: 1e6 / perSec, cpuCores: 1, redisUsPerOp: 0, clientCores: 0.5, serverWaitShare: 0, tally: { '429': 100 }, expected: '429', ...over };
}

function result(over: Partial<BenchResult> = {}): BenchResult {
  return {
    command: 'npm run bench:gateway',
    machine: { date: '2026-12-01T10:00:00.000Z', nproc: 2, cpuModel: 'cpu', memGiB: 24, kernel: 'k', node: 'v20', nginx: '1.22.1', redis: '7.0.15', loadavg: [1, 1, 1] },
    loadavgAfter: [2, 2, 2],
    finishedAt: '2026-12-01T10:05:00.000Z',
    durationSec: 300,
    options: {},
    requests: [],
    notes: [],
    ...over,
  };
}

describe('the benchmark report', () => {
  it('ratios are gateway / bare, and n/a when a side is missing or zero', () => {
    expect(ratio(50, 200)).toBe(0.25);
    expect(ratio(undefined, 1)).toBeNaN();
    expect(ratio(1, 0)).toBeNaN();
  });

  it('judges each goal from the figures, and says so when a figure was not measured', () => {
    const r = result({
      requests: [
        { id: 'dam_full', figure: '429', bare: 'replays', gateway: fig(20_000), bareFigures: fig(30_000) },
        { id: 'ai_overloaded', figure: '503', bare: 'replays', gateway: fig(1_000), bareFigures: fig(30_000) },
        { id: 'stream_open', figure: 'open', bare: 'memory', gateway: fig(300), bareFigures: fig(1_000) },
      ],
    });
    const g = goals(r);
    expect(g[0]).toMatchObject({ met: false, value: '0.67x, 0.033x' });
    expect(g[1]).toMatchObject({ met: true, value: '0.30x' });
    expect(g[2]).toMatchObject({ met: null, value: 'n/a' });
    expect(g.slice(3).every((x) => x.met === null)).toBe(true);
  });

  it('the idle goals need 10,000 sessions, <= 32 KiB each and lag p99 <= 50 ms', () => {
    const idle = { sessions: 10_000, failed: {}, openPerSec: 1, rssBeforeMiB: 100, rssAfterMiB: 400, rssPerSessionKiB: 30.7, lagP99Ms: [12, 60], lagP99MaxMs: 60, lagP99MedianMs: 12, pings: 10_000, holdSeconds: 20 };
    const g = goals(result({ idle: { gateway: idle } }));
    expect(g.find((x) => x.what.includes('RSS'))?.met).toBe(true);
    expect(g.find((x) => x.what.includes('lag'))?.met).toBe(false);
  });

  it('renders the tables with the command, the machine and the ratio of every row', () => {
    const md = renderMarkdown(result({ requests: [{ id: 'dam_full', figure: '429 `dam_full`', bare: 'replays the 429', gateway: fig(2_500), bareFigures: fig(32_000) }] }));
    expect(md).toContain('npm run bench:gateway');
    expect(md).toContain('`nproc` 2, cpu');
    expect(md).toContain('1 / 1 / 1 before, 2 / 2 / 2 after');
    expect(md).toMatch(/\| 429 `dam_full` \| 2,500 \| 32,000 \| 0\.078x \|/);
    expect(md).toContain('- 429 `dam_full`: replays the 429');
    expect(md).toContain('[NOT met] refusal throughput');
  });

  it('flags figures a reader should not trust: other outcomes, a saturated client, a starved server', () => {
    const f = fig(100, { tally: { '429': 90, '409': 10 }, clientCores: 0.95, serverWaitShare: 0.3 });
    expect(expectedShare(f)).toBeCloseTo(0.9);
    const notes = checkRow('dam_full, gateway', f);
    expect(notes).toHaveLength(3);
    expect(notes[0]).toContain('90.0% of the outcomes were 429');
    expect(notes[1]).toContain('95% of a core');
    expect(notes[2]).toContain('waited for a CPU 30%');
    expect(checkRow('ok', fig(100))).toEqual([]);
  });
});
