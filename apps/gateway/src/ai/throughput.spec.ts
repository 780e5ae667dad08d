import type { WorkerHeartbeat } from '@traffic-dam/ai-bridge';
import { LEARNING, ThroughputLearner, aiRetryAfterSec, extraWaitMs } from './throughput';

/** One heartbeat as the worker writes it (ai_worker/meter.py); ts is the beat's number. */
const hb = (ts: number, over: Partial<WorkerHeartbeat> = {}): WorkerHeartbeat => ({
  workerId: 'w1',
  capacityPerSec: 100,
  throughputPerSec: 0,
  inFlight: 0,
  answering: 0,
  ts,
  startsPerSec: 0,
  serviceRatePerSec: null,
  ttftMs: null,
  throttledUntil: 0,
  ...over,
});

/** Feeds a recorded sequence of beats (one array of live workers' heartbeats per beat); returns the gate's rate after each. */
function replay(learner: ThroughputLearner, beats: WorkerHeartbeat[][], now = 0): number[] {
  return beats.map((b) => Math.round(learner.update(b, now).rate * 10) / 10);
}

describe('ThroughputLearner over recorded heartbeat sequences', () => {
  it('has no rate without live workers, and starts a new worker at the declared ceiling', () => {
    const l = new ThroughputLearner();
    expect(l.update([], 0)).toMatchObject({ liveWorkers: 0, rate: 0 });
    expect(l.update([hb(1)], 0)).toMatchObject({ liveWorkers: 1, advertised: 100, rate: 100 });
  });

  it('low demand is not low capacity: a quiet worker keeps the ceiling however little it starts', () => {
    const l = new ThroughputLearner();
    const quiet = Array.from({ length: 30 }, (_, i) => [hb(i + 1, { startsPerSec: 0.2, throughputPerSec: 0.2, answering: 1 })]);
    expect(replay(l, quiet).every((r) => r === 100)).toBe(true);
  });

  it('a new worker is believed at its first measured service rate: one serving 40/s against a declared 100 is at 40 at once', () => {
    const l = new ThroughputLearner();
    const saturated = Array.from({ length: 8 }, (_, i) => [hb(i + 1, { startsPerSec: 40, serviceRatePerSec: 40, inFlight: 120, answering: 30 })]);
    expect(replay(l, saturated)).toEqual(Array.from({ length: 8 }, () => 40));
  });

  it("S0's opening on a worker that declares 100/s and delivers 68/s (a short contended run): the declared rate only until the first measured beat", () => {
    const l = new ThroughputLearner();
    // Beat 1: the burst arrived after it was written; beats 2..: a line, measured at 66-70/s.
    const beats = [
      [hb(1, { startsPerSec: 0, inFlight: 0 })],
      [hb(2, { startsPerSec: 14, serviceRatePerSec: null, inFlight: 256, answering: 48 })],
      [hb(3, { startsPerSec: 27, serviceRatePerSec: 69.5, inFlight: 256, answering: 41 })],
      [hb(4, { startsPerSec: 40, serviceRatePerSec: 66.1, inFlight: 256, answering: 40 })],
      [hb(5, { startsPerSec: 54, serviceRatePerSec: 68.3, inFlight: 256, answering: 42 })],
      [hb(6, { startsPerSec: 67, serviceRatePerSec: 67.8, inFlight: 256, answering: 41 })],
    ];
    const rates = replay(l, beats);
    expect(rates.slice(0, 2)).toEqual([100, 100]);
    expect(rates[2]).toBe(69.5);
    // Then it follows the measurements, within their spread.
    for (const r of rates.slice(3)) expect(r).toBeGreaterThanOrEqual(66);
    for (const r of rates.slice(3)) expect(r).toBeLessThanOrEqual(69.5);
  });

  it('rate drops later: a measured worker that slows from 100/s to 40/s follows it within a few beats', () => {
    const l = new ThroughputLearner();
    replay(l, [[hb(1, { serviceRatePerSec: 100 })]]);
    const slowed = Array.from({ length: 8 }, (_, i) => [hb(i + 2, { startsPerSec: 40, serviceRatePerSec: 40, inFlight: 120, answering: 30 })]);
    const rates = replay(l, slowed);
    expect(rates[0]).toBe(70); // halfway
    expect(rates[3]).toBeLessThan(44);
    expect(rates[7]).toBeCloseTo(40, 0);
  });

  it('rate recovers: once the worker keeps up again (no line), the old low estimate fades back toward the ceiling', () => {
    const l = new ThroughputLearner();
    replay(l, Array.from({ length: 10 }, (_, i) => [hb(i + 1, { serviceRatePerSec: 40, startsPerSec: 40 })]));
    const recovering = Array.from({ length: 30 }, (_, i) => [hb(20 + i, { startsPerSec: 30, serviceRatePerSec: null })]);
    const rates = replay(l, recovering);
    expect(rates[0]).toBeCloseTo(40 + LEARNING.recover * 60, 0);
    expect(rates.every((r, i) => i === 0 || r >= (rates[i - 1] ?? 0))).toBe(true);
    expect(rates[29]).toBeGreaterThan(95);
    // And a line serving 90/s pulls it up at once.
    const l2 = new ThroughputLearner();
    replay(l2, Array.from({ length: 10 }, (_, i) => [hb(i + 1, { serviceRatePerSec: 40 })]));
    expect(replay(l2, [[hb(30, { serviceRatePerSec: 90 })], [hb(31, { serviceRatePerSec: 90 })], [hb(32, { serviceRatePerSec: 90 })]])[2]).toBeGreaterThan(80);
  });

  it('the same beat read twice (the gate refreshes faster than workers beat) counts once', () => {
    const l = new ThroughputLearner();
    const beats = [[hb(1, { serviceRatePerSec: 100 })], [hb(2, { serviceRatePerSec: 40 })], [hb(2, { serviceRatePerSec: 40 })], [hb(2, { serviceRatePerSec: 40 })]];
    expect(replay(l, beats)).toEqual([100, 70, 70, 70]);
  });

  it('a worker joins: it adds its own estimate (starting at the ceiling), the sum never past the declared capacity', () => {
    const l = new ThroughputLearner();
    replay(l, Array.from({ length: 10 }, (_, i) => [hb(i + 1, { serviceRatePerSec: 30 })]));
    expect(l.update([hb(11, { serviceRatePerSec: 30 })], 0).rate).toBeCloseTo(30, 0);
    // w2 joins: nothing measured yet, so the ceiling is what the pair may do.
    expect(l.update([hb(12, { serviceRatePerSec: 30 }), hb(12, { workerId: 'w2' })], 0).rate).toBe(100);
    // Both with a line at 30/s each: 60.
    const both = Array.from({ length: 10 }, (_, i) => [hb(13 + i, { serviceRatePerSec: 30 }), hb(13 + i, { workerId: 'w2', serviceRatePerSec: 30 })]);
    expect(replay(l, both)[9]).toBeCloseTo(60, 0);
  });

  it('a worker leaves: its estimate goes with its heartbeat, and a worker that comes back starts afresh', () => {
    const l = new ThroughputLearner();
    const both = Array.from({ length: 10 }, (_, i) => [hb(i + 1, { serviceRatePerSec: 30 }), hb(i + 1, { workerId: 'w2', serviceRatePerSec: 30 })]);
    expect(replay(l, both)[9]).toBeCloseTo(60, 0);
    expect(l.update([hb(11, { serviceRatePerSec: 30 })], 0)).toMatchObject({ liveWorkers: 1 });
    expect(l.update([hb(12, { serviceRatePerSec: 30 })], 0).rate).toBeCloseTo(30, 0);
    expect(l.update([hb(13, { serviceRatePerSec: 30 }), hb(13, { workerId: 'w2' })], 0).rate).toBe(100);
  });

  it('adds up the answers the workers are streaming and what they started', () => {
    const v = new ThroughputLearner().update([hb(1, { answering: 2, startsPerSec: 10 }), hb(1, { workerId: 'w2', answering: 4, startsPerSec: 15 })], 0);
    expect(v).toMatchObject({ answering: 6, measured: 25 });
  });

  it('while every worker honours a Retry-After, nothing starts before the first ends; beats written then teach no rate', () => {
    const l = new ThroughputLearner();
    const now = 1_000_000;
    const v = l.update([hb(now - 100, { throttledUntil: now + 4_000, serviceRatePerSec: 0 }), hb(now - 50, { workerId: 'w2', throttledUntil: now + 2_500 })], now);
    expect(v.throttledUntil).toBe(now + 2_500);
    expect(extraWaitMs(v, now)).toBe(2_500);
    expect(extraWaitMs(v, now + 1_000)).toBe(1_500);
    expect(v.rate).toBe(100);
    // One worker free again: its rate alone counts (its first measurement, taken at once), and
    // nothing is added to the wait.
    const after = l.update([hb(now + 900, { throttledUntil: now + 4_000 }), hb(now + 950, { workerId: 'w2', serviceRatePerSec: 20 })], now + 1_000);
    expect(after.throttledUntil).toBe(0);
    expect(after.rate).toBe(20);
  });

  it('time to first token beyond its usual (queueing inside the model server) is added to the wait', () => {
    const l = new ThroughputLearner();
    expect(l.update([hb(1, { ttftMs: 200 })], 0).ttftExcessMs).toBe(0);
    expect(l.update([hb(2, { ttftMs: 180 })], 0).ttftExcessMs).toBe(0);
    expect(l.update([hb(3, { ttftMs: 1_180 })], 0).ttftExcessMs).toBe(Math.round(1_000 * (1 - LEARNING.ttftFloorRise)));
    // Unknown (too few answers in the window): nothing added.
    expect(l.update([hb(4, { ttftMs: null })], 0).ttftExcessMs).toBe(0);
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

  it('never tells a client to come back before the workers may start again (a model server Retry-After)', () => {
    expect(aiRetryAfterSec({ waitMs: 2_500, contenders: 10, rate: 40, notBeforeMs: 9_200 }, lo)).toBe(10);
    expect(aiRetryAfterSec({ waitMs: 2_500, contenders: 10, rate: 40, notBeforeMs: 9_200 }, hi)).toBe(10);
    expect(aiRetryAfterSec({ waitMs: 30_000, contenders: 10, rate: 40, notBeforeMs: 1_000 }, lo)).toBe(30);
  });

  it('is 1-2 s when the wait and rate are unknown, and never beyond 60 s', () => {
    expect(aiRetryAfterSec({ waitMs: -1, contenders: 500, rate: 0 }, lo)).toBe(1);
    expect(aiRetryAfterSec({ waitMs: -1, contenders: 500, rate: 0 }, hi)).toBe(2);
    expect(aiRetryAfterSec({ waitMs: 10 * 60_000, contenders: 1, rate: 40 }, hi)).toBe(60);
    expect(aiRetryAfterSec({ waitMs: 100, contenders: 1e6, rate: 1 }, hi)).toBe(60);
  });
});
