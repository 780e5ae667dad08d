import { aiRetryAfterSec, estimateThroughput } from './throughput';

const hb = (throughputPerSec: number, capacityPerSec = 100) => ({ workerId: 'w', capacityPerSec, throughputPerSec, inFlight: 0, ts: 1 });

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
});

describe('aiRetryAfterSec', () => {
  it('spreads retries over [drain, 2 x drain] seconds of the estimated backlog', () => {
    expect(aiRetryAfterSec(2_400, () => 0)).toBe(3);
    expect(aiRetryAfterSec(2_400, () => 0.999)).toBe(6);
    expect(aiRetryAfterSec(850, () => 0)).toBe(1);
    expect(aiRetryAfterSec(850, () => 0.999)).toBe(2);
  });

  it('is 1-2 s when the wait is unknown, and never beyond 60 s', () => {
    expect(aiRetryAfterSec(-1, () => 0)).toBe(1);
    expect(aiRetryAfterSec(-1, () => 0.999)).toBe(2);
    expect(aiRetryAfterSec(10 * 60_000, () => 0.999)).toBe(60);
  });
});
