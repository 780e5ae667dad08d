import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { SseClient, ask, waitFor, type ChatSession, type SseEvent, type Stack } from '@traffic-dam/stack';
import { startE2eStack } from './e2e-stack';

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
      // A grace of 2 s: a session of a draining instance stays (refusing questions with 503
      // draining) for that long, time enough for the test's own question to meet it.
      env: { LOG_LEVEL: 'warn', DRAIN_GRACE_MS: '2000' },
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
    /** Streams that ended after a 200, per instance: nginx counts a request that completed as the end of an upstream's rest. */
    const completedOn = new Map<string, number>();
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
        let on: string | undefined;
        try {
          const s = await sse.session();
          on = s.instanceId;
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
          if (on !== undefined) completedOn.set(on, (completedOn.get(on) ?? 0) + 1);
        }
      }
    }

    /**
     * A question in flight on gateway `url` when it gets SIGTERM: asked on a stream held there,
     * its first token already on the stream. Its answer must still end there, with done (or the
     * worker's own error), before the stream hears expired.
     */
    async function witness(url: string): Promise<{ sse: SseClient; s: ChatSession; rec: Accepted }> {
      const sse = await new SseClient(`${url}/chat/stream`).open();
      expect(sse.status).toBe(200);
      const s = await sse.session();
      const r = await ask(url, s, 'in flight at SIGTERM');
      expect(r.status).toBe(202);
      const rec: Accepted = { messageId: (r.body as { messageId: string }).messageId, instanceId: s.instanceId };
      accepted.push(rec);
      await sse.waitFor((e) => e.event === 'token' && (e.data as { messageId?: string }).messageId === rec.messageId);
      return { sse, s, rec };
    }
    const witnesses: Array<{ instanceId: string; outcome: string; events: string[]; askedWhileDraining: string }> = [];

    const liveId = async (url: string) => ((await (await fetch(`${url}/health/live`)).json()) as { instanceId: string }).instanceId;
    const load = Promise.all(Array.from({ length: CLIENTS }, (_, k) => client(k)));
    const exitCodes: Array<number | null> = [];
    const oldIds: string[] = [];
    try {
      // Steady state first: both instances hold streams and answers come back from both.
      const answeredOn = (id: string) => accepted.filter((a) => a.instanceId === id && a.outcome === 'done').length;
      await waitFor('both instances answer', () => sessionsOn.size >= 2 && [...sessionsOn.keys()].every((id) => answeredOn(id) >= 2));
      for (const i of [0, 1]) {
        const g = stack.gateways[i];
        if (!g) throw new Error(`no gateway ${i}`);
        oldIds.push(await liveId(g.url));
        const before = accepted.length;
        const w = await witness(g.url);
        process.stdout.write(`${new Date().toISOString()} SIGTERM gateway ${i}\n`);
        g.child.signal('SIGTERM');
        // Marked draining in Redis at once: a question for its session is refused, on any instance.
        await waitFor('the witness session marked draining', async () => (await redis.hget(`td:session:{${w.s.sessionId}}`, 'draining')) === '1');
        const again = await ask(stack.url, w.s, 'one more while draining?');
        const end = await w.sse.waitFor((e) => (e.event === 'done' || e.event === 'failed') && (e.data as { messageId?: string }).messageId === w.rec.messageId);
        w.rec.outcome = end.event === 'done' ? 'done' : `error:${(end.data as { code: string }).code}`;
        w.rec.endedAt = Date.now();
        const expired = await w.sse.waitFor((e) => e.event === 'expired');
        if ((expired.data as { reason?: string }).reason === 'draining') drainedInstances.add(w.rec.instanceId);
        witnesses.push({
          instanceId: w.rec.instanceId,
          outcome: w.rec.outcome,
          askedWhileDraining: `${again.status} ${(again.body as { code?: string }).code ?? ''}`,
          events: w.sse.events.filter((e) => e.event !== 'token').map((e) => (e.event === 'expired' ? `expired:${(e.data as { reason: string }).reason}` : e.event)),
        });
        w.sse.close();
        const code = await waitFor(`gateway ${i} exits after SIGTERM`, g.child.wait());
        exitCodes.push(code);
        process.stdout.write(`${new Date().toISOString()} gateway ${i} exited ${code}\n`);
        const fresh = await stack.startGateway(i, g.port);
        stack.gateways[i] = fresh;
        const freshId = await liveId(fresh.url);
        // Questions kept being accepted during the drain, and the new instance takes streams again.
        // nginx gives an instance that failed (here: refused while draining or down) one stream per
        // fail_timeout (2 s) until a request to it completes. An operator waits for that before
        // draining the next instance: a stream on it completed, and two more landed on it since.
        await waitFor(`a stream on the restarted gateway ${i} completed`, () => (completedOn.get(freshId) ?? 0) >= 1);
        const landed = sessionsOn.get(freshId) ?? 0;
        await waitFor(`gateway ${i} takes streams again`, () => (sessionsOn.get(freshId) ?? 0) >= landed + 2);
        process.stdout.write(`${new Date().toISOString()} gateway ${i} takes streams\n`);
        expect(accepted.length).toBeGreaterThan(before);
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
    // gets 503 draining (the witness asked one).
    expect(refusedPosts.filter((p) => !/^\d{3} [a-z_]+$/.test(p) || /^50[24] /.test(p) || p.includes('gateway_unavailable'))).toEqual([]);
    expect(witnesses.map((w) => w.askedWhileDraining)).toEqual(['503 draining', '503 draining']);
    // The sessions of both drained instances heard expired (draining), and the answer in flight on
    // each at SIGTERM still finished there (done, or the worker's 5% errors; never cut by the
    // drain), before its stream heard expired.
    oldIds.forEach((id) => expect(drainedInstances.has(id)).toBe(true));
    expect(witnesses.map((w) => w.instanceId)).toEqual(oldIds);
    for (const w of witnesses) {
      expect(w.outcome === 'done' || w.outcome === 'error:worker_error').toBe(true);
      expect(w.events).toEqual(['session', w.outcome === 'done' ? 'done' : 'failed', 'expired:draining']);
    }

    // None vanished: each accepted question ended in done or error, and every error is a dead letter with a reason.
    expect(accepted.length).toBeGreaterThan(50);
    expect(accepted.filter((a) => a.outcome === undefined || a.outcome.startsWith('lost:'))).toEqual([]);
    const errors = accepted.filter((a) => a.outcome?.startsWith('error:'));
    const letters = new Map<string, string>();
    await waitFor(
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
    await waitFor(
      'slots released',
      async () => {
        const views = await Promise.all(
          stack.gateways.map(async (g) => (await (await fetch(`${g.url}/dam`)).json()) as { held: number; global: { used: number } | null }),
        );
        return views.every((v) => v.held === 0 && (v.global?.used ?? 0) === 0) && (await redis.keys('td:session:*')).length === 0;
      },
    );
  }, 180_000);
});
