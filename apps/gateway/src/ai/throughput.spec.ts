import { aiRetryAfterSec, estimateThroughput } from './throughput';

const hb = (throughputPerSec: number, capacityPerSec = 100) => ({ workerId: 'w', capacityPerSec, throughputPerSec, inFlight: 0, answering: 2, ts: 1 });

describe('estimateThroughput', () => {
  it('is zero without live workers', () => {
    expect(estimateThroughput([], 10)).toMatchObject({ liveWorkers: 0, rate: 0 });
  });

  it('uses the declared capacity when idle, so a burst after quiet is not refused', () => {
    expect(estimateThroughput([hb(0), hb(0)], 300).rate).toBe(100);
  });

  it('uses the declared capacity while the queue keeps up', () => {
    expect(estimateThroughput([hb(30), hb(30)], 50).rate).toBe(100);
  });

  it('falls to the measured rate when the queue builds faster than workers drain it', () => {
    expect(estimateThroughput([hb(10), hb(15)], 200)).toMatchObject({ measured: 25, rate: 25 });
  });

  it('adds up the answers the workers are streaming', () => {
    expect(estimateThroughput([hb(10), hb(15), hb(0)], 0).answering).toBe(6);
  });
});

describe('aiRetryAfterSec', () => {
  const lo = () => 0;
  const hi = () => 0.999;

  it('spreads retries over [drain, 2 x drain] seconds of the line when few sessions compete', () => {
    expect(aiRetryAfterSec({ waitMs: 2_400, contenders: 10, rate: 40 }, lo)).toBe(3);
    expect(aiRetryAfterSec({ waitMs: 2_400, contenders: 10, rate: 40 }, hi)).toBe(6);
    expect(aiRetryAfterSec({ waitMs: 150, contenders: 10, rate: 40 }, lo)).toBe(1);
    expect(aiRetryAfterSec({ waitMs: 150, contenders: 10, rate: 40 }, hi)).toBe(2);
  });

  it('brings many competing sessions back at about three attempts per answer start', () => {
    // 2,000 sessions, 40 answers/s: base 2,000 / 120 = 16.7 -> 17 s, spread over [17, 34].
    expect(aiRetryAfterSec({ waitMs: 150, contenders: 2_000, rate: 40 }, lo)).toBe(17);
    expect(aiRetryAfterSec({ waitMs: 150, contenders: 2_000, rate: 40 }, hi)).toBe(34);
    // The mean retry interval (25.5 s) brings 2,000 sessions back at ~78/s: about 2x the AI's 40/s.
    const samples = Array.from({ length: 10_000 }, (_, i) => aiRetryAfterSec({ waitMs: 150, contenders: 2_000, rate: 40 }, () => i / 10_000));
    const mean = samples.reduce((a, b) => a + b, 0) / samples.length;
    expect(2_000 / mean / 40).toBeGreaterThan(1.5);
    expect(2_000 / mean / 40).toBeLessThan(3);
  });

  it('is 1-2 s when the wait and rate are unknown, and never beyond 60 s', () => {
    expect(aiRetryAfterSec({ waitMs: -1, contenders: 500, rate: 0 }, lo)).toBe(1);
    expect(aiRetryAfterSec({ waitMs: -1, contenders: 500, rate: 0 }, hi)).toBe(2);
    expect(aiRetryAfterSec({ waitMs: 10 * 60_000, contenders: 1, rate: 40 }, hi)).toBe(60);
    expect(aiRetryAfterSec({ waitMs: 100, contenders: 1e6, rate: 1 }, hi)).toBe(60);
  });
});
