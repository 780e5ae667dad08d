import { KNOWN_OVERLOAD_MAX_MS, KnownOverload } from './known-overload';

describe('KnownOverload', () => {
  it('proves nothing before the gate has refused', () => {
    expect(new KnownOverload().overloadedAt(Date.now())).toBeNull();
  });

  it('after a refusal, holds for the overage of the wait over the limit, counted from when the question was sent', () => {
    const k = new KnownOverload();
    // 40 answers/s, limit 150 ms: depth 8 is 200 ms of wait, 50 ms over; the line needs 50 ms to get under.
    k.refused(1_000, 200, 150);
    expect(k.overloadedAt(1_000)).toBe(200);
    expect(k.overloadedAt(1_049)).toBe(200);
    expect(k.overloadedAt(1_050)).toBeNull();
  });

  it('keeps the refusal that proves the longest', () => {
    const k = new KnownOverload();
    k.refused(1_000, 400, 150);
    // A later refusal that proves less (replies come back in the order the questions were sent).
    k.refused(1_010, 175, 150);
    expect(k.overloadedAt(1_200)).toBe(400);
    expect(k.overloadedAt(1_250)).toBeNull();
  });

  it('a queued question ends the proof: the line had room', () => {
    const k = new KnownOverload();
    k.refused(1_000, 400, 150);
    k.queued();
    expect(k.overloadedAt(1_001)).toBeNull();
  });

  it('an unknown wait (-1) proves nothing', () => {
    const k = new KnownOverload();
    k.refused(1_000, -1, 150);
    expect(k.overloadedAt(1_000)).toBeNull();
  });

  it('trusts a refusal for at most KNOWN_OVERLOAD_MAX_MS, however long the line was', () => {
    const k = new KnownOverload();
    k.refused(1_000, 60_000, 150);
    expect(k.overloadedAt(1_000 + KNOWN_OVERLOAD_MAX_MS - 1)).toBe(60_000);
    expect(k.overloadedAt(1_000 + KNOWN_OVERLOAD_MAX_MS)).toBeNull();
  });
});
