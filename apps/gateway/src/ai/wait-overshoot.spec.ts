import { MARGIN_MAX_SHARE, OVERSHOOT_SAMPLES, WaitOvershoot } from './wait-overshoot';

describe('WaitOvershoot', () => {
  it('says nothing before it has samples', () => {
    const w = new WaitOvershoot();
    for (let i = 0; i < 10; i++) w.observe(2_500, 2_000);
    expect(w.marginMs(2_000)).toBe(0);
  });

  it('is the p95 of the samples over their floor: the path own time is not overshoot', () => {
    const w = new WaitOvershoot();
    // 95 on time (the path takes 210 ms beyond the estimate), 5 late by 300 ms.
    for (let i = 0; i < 100; i++) w.observe(2_000 + 210 + (i >= 95 ? 300 : 0), 2_000);
    // (The floor rose a little with the late ones.)
    expect(w.marginMs(2_000)).toBeGreaterThanOrEqual(295);
    expect(w.marginMs(2_000)).toBeLessThanOrEqual(300);
    // An unloaded question (estimate 0) with the same path is no overshoot either.
    const idle = new WaitOvershoot();
    for (let i = 0; i < 100; i++) idle.observe(210, 0);
    expect(idle.marginMs(2_000)).toBe(0);
  });

  it('keeps the latest samples: a spell of late starts is forgotten once it is over', () => {
    const w = new WaitOvershoot();
    for (let i = 0; i < OVERSHOOT_SAMPLES; i++) w.observe(2_000 + 210 + 150, 2_000);
    for (let i = 0; i < OVERSHOOT_SAMPLES; i++) w.observe(210, 0);
    w.observe(200, 0);
    expect(w.marginMs(2_000)).toBeLessThanOrEqual(15);
  });

  it('never takes more than its share of the limit, and ignores what is not a sample', () => {
    const w = new WaitOvershoot();
    for (let i = 0; i < 50; i++) w.observe(i < 25 ? 200 : 30_000, 0);
    w.observe(Number.NaN, 0);
    w.observe(100, -1);
    expect(w.marginMs(2_000)).toBe(2_000 * MARGIN_MAX_SHARE);
  });
});
