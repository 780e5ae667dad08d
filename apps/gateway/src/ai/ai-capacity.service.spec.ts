import type { PinoLogger } from 'nestjs-pino';
import type { AiClient, AskResult, EnqueueRequest, Question, Reply, WorkerHeartbeat } from '@traffic-dam/ai-bridge';
import { loadConfig } from '../common/config/config';
import { DamModePolicy } from '../common/dam-mode.policy';
import { GatewayException } from '../common/errors';
import type { DamService } from '../dam/dam.service';
import { MetricsService } from '../metrics/metrics.service';
import { AiCapacityService } from './ai-capacity.service';
import type { BreakerService } from './breaker.service';

/**
 * The consumer group as the gate's script sees it (GATED_ASK_LUA, tested against real Redis in
 * ai-gate.integration-spec.ts): the entries delivered and not acknowledged, less the answers the
 * heartbeats say are streaming, divided by the rate the gate passes in.
 */
class FakeQueue {
  /** Questions delivered to a worker and not acknowledged (being answered, or waiting for a start). */
  pending = 0;
  /** The gate's inputs of the last question. */
  lastGate: (EnqueueRequest['gate'] & { extraWaitMs?: number }) | undefined;

  result(req: EnqueueRequest): AskResult {
    const gate = req.gate as (EnqueueRequest['gate'] & { extraWaitMs?: number }) | undefined;
    this.lastGate = gate;
    if (!gate) {
      this.pending++;
      return { status: 'queued', entryId: '1-0', waitMs: 0, depth: 0 };
    }
    const depth = Math.max(0, this.pending - Math.floor(gate.answering ?? 0));
    const extra = gate.extraWaitMs ?? 0;
    const wait = depth > 0 ? (gate.throughputPerSec > 0 ? extra + Math.floor((depth * 1000) / gate.throughputPerSec) : -1) : extra;
    if (gate.maxWaitMs > 0 && (wait < 0 || wait > gate.maxWaitMs)) return { status: 'overloaded', waitMs: wait, depth, rateWaitMs: wait };
    this.pending++;
    return { status: 'queued', entryId: `${this.pending}-0`, waitMs: wait, depth };
  }
}

/** A worker heartbeat as the Python worker writes it now (ai_worker/meter.py). */
const beat = (over: Record<string, unknown> = {}): WorkerHeartbeat =>
  ({
  workerId: 'w1',
  capacityPerSec: 100,
  throughputPerSec: 0,
  inFlight: 0,
  answering: 0,
  ts: Date.now(),
  startsPerSec: 0,
  serviceRatePerSec: null,
  ttftMs: null,
  throttledUntil: 0,
  ...over,
  }) as unknown as WorkerHeartbeat;

const question = (i: number): Question => ({
  id: `m${i}`,
  sessionId: `s${i}`,
  replyTo: 'td:replies:gw',
  question: 'q',
  deadline: Date.now() + 30_000,
  attempt: 1,
  traceId: `t${i}`,
});

function gate(env: NodeJS.ProcessEnv = {}) {
  const config = loadConfig(env);
  const queue = new FakeQueue();
  let heartbeats: WorkerHeartbeat[] = [];
  const logger = { info: () => undefined, warn: () => undefined, debug: () => undefined } as unknown as PinoLogger;
  const handlers: Array<(r: Reply) => void> = [];
  const ai = {
    liveWorkers: async () => heartbeats,
    enqueue: async (req: EnqueueRequest) => queue.result(req),
    onReply: (h: (r: Reply) => void) => handlers.push(h),
  } as unknown as AiClient;
  const breaker = { assertClosed: () => undefined, noWorkerAlive: () => undefined } as unknown as BreakerService;
  const dam = { sessionsHeld: 10 } as unknown as DamService;
  const metrics = new MetricsService('test');
  const svc = new AiCapacityService(config, logger, ai, metrics, breaker, dam, new DamModePolicy(config));
  let n = 0;
  return {
    svc,
    queue,
    metrics,
    /** The first token of the i-th question asked reaches this instance. */
    firstToken(i: number) {
      for (const h of handlers) h({ type: 'token', messageId: `m${i}`, sessionId: `s${i}`, seq: 0, text: 'x' });
    },
    /** The workers write new heartbeats; the gate reads them on its next refresh. */
    async beat(...hbs: WorkerHeartbeat[]) {
      heartbeats = hbs;
      await jest.advanceTimersByTimeAsync(config.AI_WORKER_REFRESH_MS);
    },
    /** Posts a question: 'queued', or the refusal's code and Retry-After. */
    async ask(): Promise<'queued' | { code: string; retryAfterSec: number; detail: string }> {
      try {
        svc.refuseIfKnownOverloaded();
        await svc.enqueue(question(n++));
        return 'queued';
      } catch (e) {
        if (!(e instanceof GatewayException)) throw e;
        return { code: e.code, retryAfterSec: e.options.retryAfterSec ?? 0, detail: e.detail };
      }
    },
    async start(hb: WorkerHeartbeat) {
      heartbeats = [hb];
      await svc.onApplicationBootstrap();
    },
  };
}

describe('AiCapacityService: the gate never refuses on an idle or lightly loaded queue', () => {
  beforeEach(() => jest.useFakeTimers({ now: 1_800_000_000_000 }));
  afterEach(() => jest.useRealTimers());

  it('six questions in flight after a quiet spell: all queued (it refused "Estimated wait 20.0 s" before)', async () => {
    const g = gate();
    // A quiet minute: one answer in the worker's last 5 s, so it measured 0.2-0.3 answers/s.
    await g.start(beat({ throughputPerSec: 0.2, startsPerSec: 0.2 }));
    const outcomes = [];
    // Six users ask within a second. The worker starts each at once (it is idle), but its
    // heartbeat, written up to a second before, still says nothing is answering: the gate's
    // depth counts them as ahead in line.
    for (let i = 0; i < 3; i++) outcomes.push(await g.ask());
    await g.beat(beat({ throughputPerSec: 0.3, startsPerSec: 0.4, inFlight: 0, answering: 0 }));
    for (let i = 0; i < 3; i++) outcomes.push(await g.ask());
    await g.beat(beat({ throughputPerSec: 0.3, startsPerSec: 1.2, inFlight: 3, answering: 3 }));
    outcomes.push(await g.ask());
    expect(outcomes).toEqual(Array(7).fill('queued'));
    expect(g.svc.snapshot.rate).toBe(100);
  });

  it('a worker that just started (nothing measured yet) does not make the gate refuse', async () => {
    const g = gate();
    await g.start(beat({ workerId: 'w1', throughputPerSec: 5, startsPerSec: 5, answering: 2 }));
    for (let i = 0; i < 4; i++) expect(await g.ask()).toBe('queued');
    await g.beat(beat({ workerId: 'w1', throughputPerSec: 5, startsPerSec: 5, answering: 2 }), beat({ workerId: 'w2' }));
    for (let i = 0; i < 4; i++) expect(await g.ask()).toBe('queued');
    expect(g.svc.snapshot.rate).toBe(100);
  });
});

describe('AiCapacityService: the p95 of what admitted questions waited, not their median, fits the limit', () => {
  beforeEach(() => jest.useFakeTimers({ now: 1_800_000_000_000 }));
  afterEach(() => jest.useRealTimers());

  it('first tokens later than estimated raise every estimate by the p95 overshoot', async () => {
    const g = gate();
    await g.start(beat());
    // Each question's first token comes 200 ms (the path's own time) after its estimated wait;
    // every other one 100 ms later still (the workers' start pacing).
    for (let i = 0; i < 40; i++) {
      expect(await g.ask()).toBe('queued');
      // What the line really took: the i ahead of it at 100 answers/s (a margin is not a wait).
      const lineMs = (i * 1000) / 100;
      jest.setSystemTime(Date.now() + lineMs + 200 + (i % 2) * 100);
      g.firstToken(i);
    }
    await g.ask();
    expect(g.queue.lastGate?.extraWaitMs).toBe(100);
    expect(await g.metrics.registry.getSingleMetricAsString('td_ai_wait_margin_seconds')).toContain('td_ai_wait_margin_seconds{instance_id="test"} 0.1');
  });
});
