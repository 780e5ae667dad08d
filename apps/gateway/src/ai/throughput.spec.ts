import { estimateThroughput } from './throughput';

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
