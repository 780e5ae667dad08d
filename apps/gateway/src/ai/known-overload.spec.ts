import { KNOWN_OVERLOAD_MAX_MS, KnownOverload, type GateRefusal } from './known-overload';

/** 40 answers/s declared and used by the gate, a 150 ms limit. */
const at40 = (waitMs: number): GateRefusal => ({ waitMs, gateRate: 40, maxRate: 40 });

describe('KnownOverload', () => {
  it('proves nothing before the gate has refused', () => {
    expect(new KnownOverload().overloadedAt(Date.now(), 150)).toBeNull();
  });

  it('after a refusal, holds for the overage of the wait over the limit, counted from when the question was sent', () => {
    const k = new KnownOverload();
    // Depth 8 at 40/s is 200 ms of wait, 50 ms over: two answers must start before the line fits.
    k.refused(1_000, at40(200));
    expect(k.overloadedAt(1_000, 150)).toBe(200);
    expect(k.overloadedAt(1_049, 150)).toBe(200);
    expect(k.overloadedAt(1_050, 150)).toBeNull();
  });

  it('a wait estimated at a slower rate than the workers can go proves less: the line may shorten at their full capacity', () => {
    const k = new KnownOverload();
    // The gate divided by 10/s (what the workers measurably did); they may start 40/s: 850 ms over
    // at 10/s is 8.5 questions, which 40/s starts in 212.5 ms.
    k.refused(1_000, { waitMs: 1_000, gateRate: 10, maxRate: 40 });
    expect(k.overloadedAt(1_212, 150)).toBe(1_000);
    expect(k.overloadedAt(1_213, 150)).toBeNull();
  });

  it('keeps the refusal that proves the longest', () => {
    const k = new KnownOverload();
    k.refused(1_000, at40(400));
    // A later refusal that proves less (replies come back in the order the questions were sent).
    k.refused(1_010, at40(175));
    expect(k.overloadedAt(1_200, 150)).toBe(400);
    expect(k.overloadedAt(1_250, 150)).toBeNull();
  });

  it('a refusal proves less for a longer limit (a higher tier, a question that waits) and nothing for one above its wait', () => {
    const k = new KnownOverload();
    k.refused(1_000, at40(400));
    expect(k.overloadedAt(1_200, 150)).toBe(400);
    expect(k.overloadedAt(1_200, 300)).toBeNull();
    expect(k.overloadedAt(1_099, 300)).toBe(400);
    expect(k.overloadedAt(1_000, 400)).toBeNull();
  });

  it('a question queued replaces the proof with its reading: a long wait it was allowed proves a shorter limit over', () => {
    const k = new KnownOverload();
    k.refused(1_000, at40(400));
    k.queued(1_010, at40(100));
    expect(k.overloadedAt(1_011, 50)).toBe(100);
    expect(k.overloadedAt(1_011, 150)).toBeNull();
    k.queued(1_020, at40(5_000));
    expect(k.overloadedAt(1_500, 150)).toBe(5_000);
  });

  it('forget() ends the proof: the gate inputs changed', () => {
    const k = new KnownOverload();
    k.refused(1_000, at40(400));
    k.forget();
    expect(k.overloadedAt(1_001, 150)).toBeNull();
  });

  it.each([
    ['an unknown wait (-1)', { waitMs: -1, gateRate: 40, maxRate: 40 }],
    ['an unknown gate rate', { waitMs: 400, gateRate: 0, maxRate: 40 }],
    ['an unknown capacity', { waitMs: 400, gateRate: 40, maxRate: 0 }],
  ])('%s proves nothing', (_, r) => {
    const k = new KnownOverload();
    k.refused(1_000, r);
    expect(k.overloadedAt(1_000, 150)).toBeNull();
  });

  it('trusts a refusal for at most KNOWN_OVERLOAD_MAX_MS, however long the line was', () => {
    const k = new KnownOverload();
    k.refused(1_000, at40(60_000));
    expect(k.overloadedAt(1_000 + KNOWN_OVERLOAD_MAX_MS - 1, 150)).toBe(60_000);
    expect(k.overloadedAt(1_000 + KNOWN_OVERLOAD_MAX_MS, 150)).toBeNull();
  });
});
