import { BacklogRate } from './queued-questions';

describe('BacklogRate', () => {
  it('measures only the seconds that began with a question waiting: a quiet line tells nothing of what the workers can do', () => {
    const r = new BacklogRate(10_000);
    // Quiet: 2 questions a second leave, nobody waits.
    for (let t = 0; t <= 5_000; t += 1_000) r.sample(t, t / 500, false);
    expect(r.etaMs(10)).toBeNull();
    // A line forms: 40 a second leave while some wait.
    for (let t = 6_000, d = 12; t <= 9_000; t += 1_000, d += 40) r.sample(t, d, true);
    r.sample(10_000, 12 + 4 * 40, true);
    expect(r.etaMs(40)).toBe(1_000);
    expect(r.etaMs(10)).toBe(300);
  });

  it('forgets what is older than its window', () => {
    const r = new BacklogRate(2_000);
    r.sample(0, 0, true);
    r.sample(1_000, 100, true);
    r.sample(2_000, 200, true);
    r.sample(3_000, 210, true);
    r.sample(4_000, 220, true);
    expect(r.etaMs(10)).toBe(1_000);
  });
});
