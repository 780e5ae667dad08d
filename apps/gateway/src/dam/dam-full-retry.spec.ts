import { DAM_FULL_REFUSALS_PER_SEC, DAM_FULL_RETRY_AFTER_MAX_SEC, DAM_FULL_WINDOW_SEC, DamFullRetryAfter } from './dam-full-retry';

/** A clock the test moves, and a "random" that returns what it is told. */
function fixture(): { r: DamFullRetryAfter; at: (ms: number) => void; rnd: (x: number) => void } {
  let now = 1_000_000;
  let x = 0.5;
  return {
    r: new DamFullRetryAfter(
      () => now,
      () => x,
    ),
    at: (ms) => {
      now = ms;
    },
    rnd: (v) => {
      x = v;
    },
  };
}

/** Refuses `perSec` clients a second for `secs` seconds from `from`, returning the Retry-Afters given. */
function refuse(f: ReturnType<typeof fixture>, from: number, secs: number, perSec: number): number[] {
  const given: number[] = [];
  for (let s = 0; s < secs; s++) {
    for (let i = 0; i < perSec; i++) {
      f.at(from + s * 1_000 + Math.floor((i * 1_000) / perSec));
      given.push(f.r.refused());
    }
  }
  return given;
}

describe('DamFullRetryAfter', () => {
  it('with few clients waiting: 1-3 s, jittered', () => {
    const f = fixture();
    f.rnd(0);
    expect(f.r.refused()).toBe(1);
    f.rnd(0.5);
    expect(f.r.refused()).toBe(2);
    f.rnd(0.999);
    expect(f.r.refused()).toBe(3);
  });

  it('a hundred refused at once (a burst, not a crowd) still get 1-3 s', () => {
    const f = fixture();
    const given = refuse(f, 1_000_000, 1, 100);
    expect(Math.min(...given)).toBe(2);
    expect(Math.max(...given)).toBe(2);
  });

  it('a thousand clients coming back every 2 s: the Retry-After grows until they come back at the budget of refusals', () => {
    const f = fixture();
    // 1,000 clients refused at a mean of 2 s come back 500 times a second; none is admitted.
    refuse(f, 1_000_000, DAM_FULL_WINDOW_SEC, 500);
    f.at(1_000_000 + DAM_FULL_WINDOW_SEC * 1_000);
    const ra = f.r.refused();
    // Waiting ~1,000; at most 50 comebacks a second means a mean of 20 s: base 10, 10-30 s.
    expect(ra).toBeGreaterThanOrEqual(10);
    expect(ra).toBeLessThanOrEqual(DAM_FULL_RETRY_AFTER_MAX_SEC);
    expect(1_000 / ra).toBeLessThanOrEqual(2 * DAM_FULL_REFUSALS_PER_SEC);
  });

  it('settles where the crowd comes back at the budget of refusals', () => {
    const f = fixture();
    // 1,000 clients, each back when its Retry-After runs out: the refusals a second follow from the
    // Retry-Afters given, and the instance ends up answering about DAM_FULL_REFUSALS_PER_SEC of them.
    const clients = 1_000;
    const back: number[] = Array.from({ length: clients }, (_, i) => 1_000_000 + Math.floor((i * 1_000) / clients));
    const perSec = new Map<number, number>();
    for (let step = 0; step < 200_000; step++) {
      let i = 0;
      for (let j = 1; j < clients; j++) if ((back[j] as number) < (back[i] as number)) i = j;
      const at = back[i] as number;
      if (at >= 1_000_000 + 120_000) break;
      f.at(at);
      f.rnd(((step * 7919) % 1_000) / 1_000);
      back[i] = at + f.r.refused() * 1_000;
      const sec = Math.floor((at - 1_000_000) / 1_000);
      perSec.set(sec, (perSec.get(sec) ?? 0) + 1);
    }
    // The first seconds: everybody at 1-3 s. The last minute: within a factor of the budget.
    expect(perSec.get(0)).toBe(clients);
    const lastMinute = Array.from({ length: 60 }, (_, k) => perSec.get(60 + k) ?? 0);
    const mean = lastMinute.reduce((a, b) => a + b, 0) / 60;
    expect(mean).toBeGreaterThanOrEqual(DAM_FULL_REFUSALS_PER_SEC / 2);
    expect(mean).toBeLessThanOrEqual(2 * DAM_FULL_REFUSALS_PER_SEC);
  });

  it('forgets what is older than the window: the crowd gone, back to 1-3 s', () => {
    const f = fixture();
    refuse(f, 1_000_000, DAM_FULL_WINDOW_SEC, 500);
    f.at(1_000_000 + 2 * DAM_FULL_WINDOW_SEC * 1_000);
    expect(f.r.refused()).toBe(2);
  });

  it('never more than DAM_FULL_RETRY_AFTER_MAX_SEC', () => {
    const f = fixture();
    refuse(f, 1_000_000, DAM_FULL_WINDOW_SEC, 5_000);
    f.rnd(0.999);
    f.at(1_000_000 + DAM_FULL_WINDOW_SEC * 1_000);
    expect(f.r.refused()).toBe(DAM_FULL_RETRY_AFTER_MAX_SEC);
  });
});
