import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { SseClient, ask, type SseEvent, type Stack } from '@traffic-dam/stack';
import { eventually, startE2eStack } from './e2e-stack';

/** One accepted question (POST 202) and how it ended on its stream. */
interface Accepted {
  messageId: string;
  instanceId: string;
  /** done | error:<code> | lost:<why> */
  outcome?: string;
  endedAt?: number;
}

const CLIENTS = 16;
const MAX_QUESTIONS_PER_CLIENT = 200;
const LOAD_LIMIT_MS = 90_000;
/** As in the seed's experiment a user opens a stream, asks, reads the answer, and leaves: here after 2 questions. */
const QUESTIONS_PER_STREAM = 2;

describe('rolling restart of 2 gateways under load', () => {
  let stack: Stack;
  let redis: Redis;

  beforeAll(async () => {
    stack = await startE2eStack({
      env: { LOG_LEVEL: 'warn', DRAIN_GRACE_MS: '500', DRAIN_INFLIGHT_MS: '8000' },
      // ~1 s answers; 5% fail in the worker, so the error path (dead-lettered) is exercised too.
      workerEnv: () => ({ AI_TTFT_MS: '100', AI_TOKENS_PER_SEC: '20', AI_ANSWER_TOKENS: '18', AI_FAULT_ERROR_RATIO: '0.05' }),
    });
    redis = new Redis(stack.redisUrl);
  });

  afterAll(async () => {
    redis?.disconnect();
    await stack?.stop();
  });

  it('loses no accepted question: each ends in done, or in an error that is dead-lettered; drained streams hear expired', async () => {
    const accepted: Accepted[] = [];
    const streamStatuses: number[] = [];
    const refusedPosts: string[] = [];
    const drainedInstances = new Set<string>();
    const sessionsOn = new Map<string, number>();
    let stop = false;
    const loadUntil = Date.now() + LOAD_LIMIT_MS;

    const isEnd = (messageId: string) => (e: SseEvent) =>
      e.event === 'expired' || ((e.event === 'done' || e.event === 'failed') && (e.data as { messageId?: string }).messageId === messageId);

    async function client(k: number): Promise<void> {
      let asked = 0;
      while (!stop && asked < MAX_QUESTIONS_PER_CLIENT && Date.now() < loadUntil) {
        const sse = await new SseClient(`${stack.url}/chat/stream`).open();
        streamStatuses.push(sse.status);
        if (sse.status !== 200) {
          await sleep(200);
          continue;
        }
        try {
          const s = await sse.session();
          sessionsOn.set(s.instanceId, (sessionsOn.get(s.instanceId) ?? 0) + 1);
          for (let n = 0; n < QUESTIONS_PER_STREAM && !stop && asked < MAX_QUESTIONS_PER_CLIENT && !sse.closed; n++) {
            const from = sse.events.length;
            const r = await ask(stack.url, s, `question ${k}-${asked}`);
            asked++;
            if (r.status === 202) {
              const rec: Accepted = { messageId: (r.body as { messageId: string }).messageId, instanceId: s.instanceId };
              accepted.push(rec);
              const end = await sse.waitFor(isEnd(rec.messageId), 30_000, from).catch((err: unknown) => err as Error);
              rec.endedAt = Date.now();
              if (end instanceof Error) rec.outcome = `lost:${end.message}`;
              else if (end.event === 'done') rec.outcome = 'done';
              else if (end.event === 'failed') rec.outcome = `error:${(end.data as { code: string }).code}`;
              else rec.outcome = `lost:expired before its answer (${JSON.stringify(end.data)})`;
            } else {
              const problem = (r.headers.get('content-type') ?? '').includes('application/problem+json');
              const code = (r.body as { code?: string }).code ?? 'none';
              refusedPosts.push(`${r.status} ${code}${problem ? '' : ' (not problem+json)'}`);
              if (code === 'draining') {
                // The stream's instance is shutting down: its expired event comes within the grace.
                const e = await sse.waitFor((x) => x.event === 'expired', 10_000, from).catch(() => null);
                if (e) break;
              }
              await sleep(100);
            }
            const expired = sse.events.find((e) => e.event === 'expired');
            if (expired) {
              if ((expired.data as { reason?: string }).reason === 'draining') drainedInstances.add(s.instanceId);
              break;
            }
            await sleep(50 + (k % 5) * 20);
          }
          const expired = sse.events.find((e) => e.event === 'expired');
          if (expired && (expired.data as { reason?: string }).reason === 'draining') drainedInstances.add(s.instanceId);
        } finally {
          sse.close();
        }
      }
    }

    const liveId = async (url: string) => ((await (await fetch(`${url}/health/live`)).json()) as { instanceId: string }).instanceId;
    const load = Promise.all(Array.from({ length: CLIENTS }, (_, k) => client(k)));
    const exitCodes: Array<number | null> = [];
    const oldIds: string[] = [];
    const sigtermAt: number[] = [];
    try {
      // Steady state first: both instances hold streams.
      await eventually('both instances serve', () => sessionsOn.size >= 2, 15_000);
      await sleep(1_000);
      for (const i of [0, 1]) {
        const g = stack.gateways[i];
        if (!g) throw new Error(`no gateway ${i}`);
        oldIds.push(await liveId(g.url));
        const before = accepted.length;
        process.stdout.write(`${new Date().toISOString()} SIGTERM gateway ${i}\n`);
        sigtermAt.push(Date.now());
        g.child.signal('SIGTERM');
        const code = await Promise.race([g.child.wait(), sleep(20_000).then(() => 'timeout' as const)]);
        if (code === 'timeout') throw new Error(`gateway ${i} did not exit within 20 s of SIGTERM`);
        exitCodes.push(code);
        process.stdout.write(`${new Date().toISOString()} gateway ${i} exited ${code}\n`);
        const fresh = await stack.startGateway(i, g.port);
        stack.gateways[i] = fresh;
        const freshId = await liveId(fresh.url);
        // Questions kept being accepted during the drain, and the new instance takes streams again.
        // nginx gives an instance that failed (here: refused while draining or down) one stream per
        // fail_timeout (2 s) until a request to it completes: wait for a few, then past that window,
        // as an operator waits before draining the next instance.
        await eventually(`gateway ${i} takes streams again`, () => (sessionsOn.get(freshId) ?? 0) >= 3, 20_000);
        process.stdout.write(`${new Date().toISOString()} gateway ${i} takes streams\n`);
        expect(accepted.length).toBeGreaterThan(before);
        await sleep(2_500);
      }
    } finally {
      stop = true;
      await load;
    }

    process.stdout.write(`refused: ${JSON.stringify(refusedPosts)}\nstreams: ${JSON.stringify(streamStatuses.filter((x) => x !== 200))}\n`);
    // Exit code 0 after each drain.
    expect(exitCodes).toEqual([0, 0]);
    // Every stream opened through nginx: a draining instance's 503 was retried on the other one.
    expect(streamStatuses.filter((s) => s !== 200)).toEqual([]);
    // Refused questions are refused clearly: a problem+json with a code from a gateway, never an
    // edge error (502/504, or the edge's gateway_unavailable: one gateway serves all along) or a
    // dropped connection (ask() would throw). A question for a session of a draining instance
    // gets 503 draining.
    expect(refusedPosts.filter((p) => !/^\d{3} [a-z_]+$/.test(p) || /^50[24] /.test(p) || p.includes('gateway_unavailable'))).toEqual([]);
    expect(refusedPosts).toContain('503 draining');
    // The sessions of both drained instances heard expired (draining), and answers in flight on
    // them at SIGTERM still finished there.
    oldIds.forEach((id, i) => {
      expect(drainedInstances.has(id)).toBe(true);
      const finishedWhileDraining = accepted.filter((a) => a.instanceId === id && a.outcome === 'done' && (a.endedAt ?? 0) > (sigtermAt[i] ?? Infinity));
      expect(finishedWhileDraining.length).toBeGreaterThan(0);
    });

    // None vanished: each accepted question ended in done or error, and every error is a dead letter with a reason.
    expect(accepted.length).toBeGreaterThan(50);
    expect(accepted.filter((a) => a.outcome === undefined || a.outcome.startsWith('lost:'))).toEqual([]);
    const errors = accepted.filter((a) => a.outcome?.startsWith('error:'));
    const letters = new Map<string, string>();
    await eventually(
      'every error dead-lettered',
      async () => {
        const entries = (await redis.xrange('td:dlq', '-', '+')) as Array<[string, string[]]>;
        for (const [, flat] of entries) {
          const f: Record<string, string> = {};
          for (let i = 0; i + 1 < flat.length; i += 2) f[flat[i] as string] = flat[i + 1] as string;
          if (f['id'] && f['reason']) letters.set(f['id'], f['reason']);
        }
        return errors.every((e) => letters.has(e.messageId));
      },
      10_000,
    ).catch(() => undefined);
    const notDeadLettered = errors.filter((e) => !letters.has(e.messageId));
    expect(notDeadLettered).toEqual([]);
    // The reason is the error's code (a breaker that opened meanwhile dead-letters as breaker_open).
    const reasonOf = (code: string) => (code === 'ai_unavailable' ? 'breaker_open' : code);
    for (const e of errors) expect(`${e.outcome} -> ${letters.get(e.messageId)}`).toBe(`${e.outcome} -> ${reasonOf(e.outcome?.slice('error:'.length) ?? '')}`);
    process.stdout.write(
      `rolling restart: ${accepted.length} accepted, ${accepted.filter((a) => a.outcome === 'done').length} done, ` +
        `${errors.length} dead-lettered errors, ${refusedPosts.length} refused (${[...new Set(refusedPosts)].join(', ')}), ` +
        `${streamStatuses.length} streams opened\n`,
    );

    // Slots back to 0 on both instances and in the global budget; no session left in Redis.
    await eventually(
      'slots released',
      async () => {
        const views = await Promise.all(
          stack.gateways.map(async (g) => (await (await fetch(`${g.url}/dam`)).json()) as { held: number; global: { used: number } | null }),
        );
        return views.every((v) => v.held === 0 && (v.global?.used ?? 0) === 0) && (await redis.keys('td:session:*')).length === 0;
      },
      10_000,
    );
  }, 180_000);
});
