import { TurnoverMeter } from './turnover';

describe('TurnoverMeter', () => {
  it('is unknown until two samples a second apart', () => {
    const m = new TurnoverMeter(10_000);
    expect(m.perSec()).toBeNull();
    m.sample(1_000, 5);
    expect(m.perSec()).toBeNull();
    m.sample(1_500, 10);
    expect(m.perSec()).toBeNull();
    m.sample(2_000, 25);
    expect(m.perSec()).toBe(20);
    expect(m.etaMs(10)).toBe(500);
    expect(m.reachable(3_000)).toBe(60);
  });

  it('measures over the window only, and forgets a counter that went back', () => {
    const m = new TurnoverMeter(2_000);
    for (let s = 0; s <= 10; s++) m.sample(s * 1_000, s < 5 ? s * 100 : 400 + (s - 4) * 10);
    // The last 2 s: 10 slots a second, not the 100/s of the start.
    expect(m.perSec()).toBeCloseTo(10);
    m.sample(11_000, 3);
    expect(m.perSec()).toBeNull();
    m.sample(12_000, 9);
    expect(m.perSec()).toBe(6);
  });

  it('says unknown when nothing was freed (a wait cannot be estimated) and any waiter is reachable', () => {
    const m = new TurnoverMeter(10_000);
    m.sample(0, 7);
    m.sample(5_000, 7);
    expect(m.perSec()).toBeNull();
    expect(m.etaMs(3)).toBeNull();
    expect(m.reachable(30_000)).toBe(-1);
  });
});
