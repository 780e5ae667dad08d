import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { startTestRedis, waitFor, type RedisHandle } from '@traffic-dam/stack';
import { AiClient, AnswerTimeoutError } from './ai.client';
import { DeadLetterQueue } from './dead-letters';
import { QuestionSweeper } from './sweeper';
import type { Reply } from './protocol';
import { protocolValidator } from './schema';

describe('AiClient and the protocol against real Redis', () => {
  let redis: RedisHandle;
  let commands: Redis;
  let subscriber: Redis;
  let bridge: AiClient;
  const check = protocolValidator();

  beforeAll(async () => {
    redis = await startTestRedis(mkdtempSync(join(tmpdir(), 'td-bridge-')));
    commands = new Redis(redis.url);
    subscriber = new Redis(redis.url);
    bridge = new AiClient({ commands, subscriber, instanceId: 'gw-test', questionStreamMaxLen: 1_000 });
    await bridge.connect();
  });

  afterAll(async () => {
    await bridge.close();
    commands.disconnect();
    subscriber.disconnect();
    await redis.stop();
  });

  it('writes a question the schema accepts', async () => {
    const r = await bridge.enqueue({
      question: {
        id: 'm-1',
        sessionId: 's-1',
        replyTo: bridge.replyChannel,
        question: 'hello',
        deadline: Date.now() + 30_000,
        attempt: 1,
        traceId: 't-1',
      },
    });
    const id = r.status === 'queued' ? r.entryId : '';
    const [[entryId, flat]] = (await commands.xrange('td:questions', id, id)) as [[string, string[]]];
    expect(entryId).toBe(id);
    const fields = Object.fromEntries(Array.from({ length: flat.length / 2 }, (_, i) => [flat[2 * i], flat[2 * i + 1]]));
    expect(check('Question', fields)).toEqual([]);
    expect(fields['replyTo']).toBe('td:replies:gw-test');
  });

  it('delivers valid replies from its own channel only and counts invalid ones', async () => {
    const got: Reply[] = [];
    const off = bridge.onReply((r) => got.push(r));
    const pub = new Redis(redis.url);
    const token = { type: 'token', messageId: 'm-1', sessionId: 's-1', seq: 0, text: 'a ' };
    await pub.publish('td:replies:other-instance', JSON.stringify(token));
    await pub.publish(bridge.replyChannel, 'not json');
    await pub.publish(bridge.replyChannel, JSON.stringify(token));
    await pub.publish(bridge.replyChannel, JSON.stringify({ type: 'done', messageId: 'm-1', sessionId: 's-1', tokens: 1 }));
    await waitFor('two valid replies', () => got.length >= 2, { pollMs: 10 }).catch(() => undefined);
    off();
    pub.disconnect();
    expect(got.map((r) => r.type)).toEqual(['token', 'done']);
    expect(bridge.invalidReplyCount).toBe(1);
  });

  it('reads the batches on its batch channel in order, beside single replies, a bad entry costing only itself', async () => {
    const before = bridge.invalidReplyCount;
    const pub = new Redis(redis.url);
    const answers: Record<string, Reply[]> = { 'b-1': [], 'b-2': [] };
    const watches = Object.keys(answers).map((id) =>
      bridge.answer({ messageId: id, timeoutMs: 10_000 }).subscribe({ next: (r) => answers[id]?.push(r) }),
    );
    const token = (messageId: string, seq: number) => ({ type: 'token', messageId, sessionId: `s-${messageId}`, seq, text: `${seq} ` });
    const batch = { type: 'batch', replies: [token('b-1', 0), token('b-2', 0), token('b-1', 1), { type: 'token', messageId: 'b-2' }, token('b-2', 1)] };
    // As a worker sends them: batches on the batch channel, a lone reply singly on the reply channel.
    expect(await pub.publish(bridge.replyBatchChannel, JSON.stringify(batch))).toBe(1);
    await pub.publish(bridge.replyChannel, JSON.stringify(token('b-1', 2)));
    const end = { type: 'batch', replies: [{ type: 'done', messageId: 'b-1', sessionId: 's-b-1', tokens: 3 }, { type: 'done', messageId: 'b-2', sessionId: 's-b-2', tokens: 2 }] };
    expect(check('ReplyMessage', end)).toEqual([]);
    await pub.publish(bridge.replyBatchChannel, JSON.stringify(end));
    await waitFor('both answers done', () => Object.values(answers).every((rs) => rs.at(-1)?.type === 'done'));
    for (const w of watches) w.unsubscribe();
    pub.disconnect();
    expect(answers['b-1']?.map((r) => (r.type === 'token' ? r.seq : r.type))).toEqual([0, 1, 2, 'done']);
    expect(answers['b-2']?.map((r) => (r.type === 'token' ? r.seq : r.type))).toEqual([0, 1, 'done']);
    expect(bridge.invalidReplyCount - before).toBe(1);
  });

  describe('watchAnswer (answer() without the Observable)', () => {
    const token = (messageId: string, seq: number) => ({ type: 'token', messageId, sessionId: 's-w', seq, text: `${seq} ` });

    it('hands the replies over in order and ends after done: a reply after it is not its own', async () => {
      const pub = new Redis(redis.url);
      const got: Reply[] = [];
      const errors: unknown[] = [];
      bridge.watchAnswer({ messageId: 'w-1', timeoutMs: 10_000 }, { next: (r) => got.push(r), error: (e) => errors.push(e) });
      await waitFor('watching', () => bridge.watching >= 1);
      const batch = { type: 'batch', replies: [token('w-1', 0), token('w-1', 1), { type: 'done', messageId: 'w-1', sessionId: 's-w', tokens: 2 }, token('w-1', 2)] };
      await pub.publish(bridge.replyBatchChannel, JSON.stringify(batch));
      await waitFor('done', () => got.some((r) => r.type === 'done'));
      pub.disconnect();
      expect(got.map((r) => (r.type === 'token' ? r.seq : r.type))).toEqual([0, 1, 'done']);
      expect(errors).toEqual([]);
      expect(bridge.watching).toBe(0);
    });

    it('ends with AnswerTimeoutError when nothing comes in time', async () => {
      const errors: unknown[] = [];
      bridge.watchAnswer({ messageId: 'w-2', timeoutMs: 50 }, { next: () => undefined, error: (e) => errors.push(e) });
      const [err] = await waitFor('the deadline', () => (errors.length > 0 ? errors : null));
      expect(err).toBeInstanceOf(AnswerTimeoutError);
    });

    it('stopped before the end, cancels the question for its worker and hears nothing more', async () => {
      const pub = new Redis(redis.url);
      const got: Reply[] = [];
      const stop = bridge.watchAnswer({ messageId: 'w-3', timeoutMs: 10_000 }, { next: (r) => got.push(r), error: () => undefined });
      await waitFor('watching', () => bridge.watching >= 1);
      await pub.publish(bridge.replyChannel, JSON.stringify(token('w-3', 0)));
      await waitFor('first token', () => got.length === 1);
      stop();
      await waitFor('cancel marked', async () => (await commands.exists('td:cancel:w-3')) === 1);
      // A later token of its own: still delivered to nobody. Waited for by a reply that comes after it.
      const after: Reply[] = [];
      const off = bridge.onReply((r) => after.push(r));
      await pub.publish(bridge.replyChannel, JSON.stringify(token('w-3', 1)));
      await pub.publish(bridge.replyChannel, JSON.stringify({ type: 'done', messageId: 'w-3', sessionId: 's-w', tokens: 2 }));
      await waitFor('the later replies reached the channel', () => after.length === 2);
      off();
      pub.disconnect();
      expect(got).toHaveLength(1);
    });

    it('stopped before it started watching, never watches', async () => {
      const stop = bridge.watchAnswer({ messageId: 'w-4', timeoutMs: 10_000 }, { next: () => undefined, error: () => undefined });
      stop();
      const idle = bridge.watchAnswer({ messageId: 'w-5', timeoutMs: 10_000 }, { next: () => undefined, error: () => undefined });
      await waitFor('the next watch started', () => bridge.watching >= 1);
      expect(bridge.watching).toBe(1);
      idle();
    });
  });

  it('marks a question cancelled with a TTL', async () => {
    await bridge.cancel('m-9');
    expect(await commands.exists('td:cancel:m-9')).toBe(1);
    const ttl = await commands.pttl('td:cancel:m-9');
    expect(ttl).toBeGreaterThan(0);
    expect(ttl).toBeLessThanOrEqual(60_000);
  });

  it('lists live workers from their heartbeat keys and skips garbage', async () => {
    const hb = {
      workerId: 'w1',
      capacityPerSec: 100,
      throughputPerSec: 0,
      inFlight: 0,
      answering: 0,
      ts: Date.now(),
      startsPerSec: 1.5,
      serviceRatePerSec: null,
      ttftMs: null,
      throttledUntil: 0,
    };
    await commands.set('td:workers:w1', JSON.stringify(hb), 'PX', 3_000);
    await commands.set('td:workers:bad', '{nope', 'PX', 3_000);
    expect(await bridge.liveWorkers()).toEqual([hb]);
  });

  it('gates the enqueue on the estimated wait, atomically, from the group depth', async () => {
    const stream = 'td:gate-test';
    const gated = new AiClient({ commands, subscriber, instanceId: 'gw-gate', questionStream: stream });
    const q = (n: number) => ({
      id: `g-${n}`,
      sessionId: 's',
      replyTo: gated.replyChannel,
      question: 'q',
      deadline: Date.now() + 30_000,
      attempt: 1,
      traceId: 't',
    });
    // No group yet: nothing is waiting, so the first question fits. At 1 answer/s the line's
    // length sets every wait here (its entries are seconds younger than the waits it implies).
    await commands.xgroup('CREATE', stream, 'workers', '$', 'MKSTREAM');
    const results = [];
    for (let n = 0; n < 8; n++) results.push(await gated.enqueue({ question: q(n), gate: { maxWaitMs: 5_000, throughputPerSec: 1 } }));
    // 1 answer/s and 5 s allowed: depth 0..5 fits (wait 0..5 s), the 7th would wait 6 s.
    expect(results.map((r) => r.status)).toEqual(['queued', 'queued', 'queued', 'queued', 'queued', 'queued', 'overloaded', 'overloaded']);
    expect(results[6]).toMatchObject({ status: 'overloaded', waitMs: 6_000, depth: 6, rateWaitMs: 6_000 });
    expect(await commands.xlen(stream)).toBe(6);
    // Delivered but not acknowledged still counts as depth.
    await commands.xreadgroup('GROUP', 'workers', 'w1', 'COUNT', 3, 'STREAMS', stream, '>');
    expect(await gated.enqueue({ question: q(9), gate: { maxWaitMs: 5_000, throughputPerSec: 1 } })).toMatchObject({ status: 'overloaded', depth: 6 });
    // Two of the three delivered are being answered: not ahead in line, so depth 4 and room again.
    expect(await gated.enqueue({ question: q(11), gate: { maxWaitMs: 5_000, throughputPerSec: 1, answering: 2 } })).toMatchObject({
      status: 'queued',
      depth: 4,
      waitMs: 4_000,
    });
    expect(await commands.xlen(stream)).toBe(7);
    // The same message id again queues nothing (a resend after a reconnect).
    expect(await gated.enqueue({ question: q(11), gate: { maxWaitMs: 5_000, throughputPerSec: 1 } })).toMatchObject({ status: 'queued' });
    expect(await commands.xlen(stream)).toBe(7);
    // A wait before any answer can start (the workers honour a Retry-After) adds to the line's:
    // 5 s of line + 2 s is over the limit, even with the room the line itself has.
    expect(await gated.enqueue({ question: q(12), gate: { maxWaitMs: 5_000, throughputPerSec: 1, answering: 2, extraWaitMs: 2_000 } })).toMatchObject({
      status: 'overloaded',
      depth: 5,
      waitMs: 7_000,
    });
    // And alone it is the wait of an empty line.
    const empty = new AiClient({ commands, subscriber, instanceId: 'gw-gate2', questionStream: 'td:gate-empty' });
    expect(await empty.enqueue({ question: q(13), gate: { maxWaitMs: 500, throughputPerSec: 10, extraWaitMs: 900 } })).toMatchObject({ status: 'overloaded', depth: 0, waitMs: 900 });
    // Throughput unknown and something waiting: no estimate, so no admission.
    expect(await gated.enqueue({ question: q(10), gate: { maxWaitMs: 5_000, throughputPerSec: 0 } })).toMatchObject({ status: 'overloaded', waitMs: -1 });
  });

  it('holds the gate to what the line measurably takes: an entry that waited past the limit refuses, whatever the throughput says', async () => {
    const stream = 'td:gate-head';
    const gated = new AiClient({ commands, subscriber, instanceId: 'gw-head', questionStream: stream });
    const q = (n: number) => ({ id: `h-${n}`, sessionId: 's', replyTo: gated.replyChannel, question: 'q', deadline: Date.now() + 30_000, attempt: 1, traceId: 't' });
    await commands.xgroup('CREATE', stream, 'workers', '$', 'MKSTREAM');
    // Three questions that arrived 4 s ago (their ids are their arrival times) and still wait.
    const [secs] = await commands.time();
    const arrived = Number(secs) * 1_000 - 4_000;
    for (let i = 0; i < 3; i++) await commands.xadd(stream, `${arrived}-${i}`, 'id', `old-${i}`);
    // Told 1,000 answers/s (a new worker trusted at its declared capacity), the line's length says
    // 3 ms; its oldest entry has waited 4 s: refused, and the length alone proves nothing.
    const refused = await gated.enqueue({ question: q(0), gate: { maxWaitMs: 2_000, throughputPerSec: 1_000 } });
    expect(refused).toMatchObject({ status: 'overloaded', depth: 3, rateWaitMs: 3 });
    expect(refused.waitMs).toBeGreaterThanOrEqual(4_000);
    // Taken by a worker and being answered: nothing waits in the stream, the line has room again.
    await commands.xreadgroup('GROUP', 'workers', 'w1', 'COUNT', 3, 'STREAMS', stream, '>');
    expect(await gated.enqueue({ question: q(1), gate: { maxWaitMs: 2_000, throughputPerSec: 1_000, answering: 3 } })).toMatchObject({ status: 'queued', depth: 0 });
  });

  it('dead letters: the schema shape round-trips; replay keeps deadlines, skips expired ones, spends a budget', async () => {
    const dlq = new DeadLetterQueue({ redis: commands, stream: 'td:dlq-test', questionStream: 'td:replay-test' });
    const letter = (id: string, deadline: number) => ({
      reason: 'worker_error',
      message: 'boom',
      id,
      sessionId: 's-1',
      replyTo: 'td:replies:gw-x',
      question: 'q?',
      deadline: String(deadline),
      attempt: '1',
      traceId: `t-${id}`,
      tokensSent: '2',
      failedAt: String(Date.now()),
      by: 'worker-0',
    });
    const future = Date.now() + 60_000;
    for (const l of [letter('old', Date.now() - 1), letter('a', future), letter('b', future)]) {
      expect(check('DeadLetter', l)).toEqual([]);
      await commands.xadd('td:dlq-test', '*', ...Object.entries(l).flat());
    }
    const listed = await dlq.list();
    expect(listed.map((d) => [d.question.id, d.reason, d.tokensSent])).toEqual([
      ['old', 'worker_error', 2],
      ['a', 'worker_error', 2],
      ['b', 'worker_error', 2],
    ]);
    expect((await dlq.get(listed[1]!.entryId))?.question.id).toBe('a');
    expect(await dlq.replay(1)).toEqual({ replayed: 1, skippedExpired: 1, deferred: 1 });
    const [[, flat]] = (await commands.xrange('td:replay-test', '-', '+')) as [[string, string[]]];
    const q = Object.fromEntries(Array.from({ length: flat.length / 2 }, (_, i) => [flat[2 * i], flat[2 * i + 1]]));
    expect(check('Question', q)).toEqual([]);
    expect(q).toMatchObject({ id: 'a', attempt: '2', deadline: String(future) });
    expect(await dlq.size()).toBe(2);
    expect(await dlq.purge()).toBe(2);
    expect(await dlq.size()).toBe(0);
  });

  it("the sweeper requeues a dead consumer's live questions and dead-letters the expired ones, with an error to the client", async () => {
    const stream = 'td:sweep-test';
    await commands.xgroup('CREATE', stream, 'workers', '$', 'MKSTREAM');
    const q = (id: string, deadline: number) => ['id', id, 'sessionId', 's-9', 'replyTo', 'td:replies:gw-sweep', 'question', 'q?', 'deadline', String(deadline), 'attempt', '1', 'traceId', `t-${id}`];
    await commands.xadd(stream, '*', ...q('live', Date.now() + 60_000));
    await commands.xadd(stream, '*', ...q('expired', Date.now() - 1));
    await commands.xreadgroup('GROUP', 'workers', 'dead-worker', 'COUNT', 10, 'STREAMS', stream, '>');
    const sub = new Redis(redis.url);
    const errors: unknown[] = [];
    sub.on('message', (_c: string, m: string) => errors.push(JSON.parse(m)));
    await sub.subscribe('td:replies:gw-sweep');
    const sweeper = new QuestionSweeper({ redis: commands, questionStream: stream, dlqStream: 'td:dlq-sweep', minIdleMs: 0, by: 'sweeper:test' });
    // A live consumer's entries are left alone.
    expect(await sweeper.sweepOnce(() => true)).toEqual({ requeued: 0, deadLettered: 0 });
    expect(await sweeper.sweepOnce(() => false)).toEqual({ requeued: 1, deadLettered: 1 });
    expect(((await commands.xpending(stream, 'workers')) as [number])[0]).toBe(0);
    const entries = (await commands.xrange(stream, '-', '+')) as Array<[string, string[]]>;
    const requeued = Object.fromEntries(Array.from({ length: entries[2]![1].length / 2 }, (_, k) => [entries[2]![1][2 * k], entries[2]![1][2 * k + 1]]));
    expect(check('Question', requeued)).toEqual([]);
    expect(requeued).toMatchObject({ id: 'live', attempt: '2' });
    const [[, flat]] = (await commands.xrange('td:dlq-sweep', '-', '+')) as [[string, string[]]];
    const letter = Object.fromEntries(Array.from({ length: flat.length / 2 }, (_, k) => [flat[2 * k], flat[2 * k + 1]]));
    expect(check('DeadLetter', letter)).toEqual([]);
    expect(letter).toMatchObject({ id: 'expired', reason: 'deadline_exceeded', by: 'sweeper:test' });
    await waitFor('the client told', () => errors.length >= 1, { pollMs: 10 }).catch(() => undefined);
    sub.disconnect();
    expect(errors).toHaveLength(1);
    expect(check('Reply', errors[0])).toEqual([]);
    expect(errors[0]).toMatchObject({ type: 'error', messageId: 'expired', code: 'deadline_exceeded' });
  });

  it('when the breaker opens, the questions still queued are dead-lettered (breaker_open) and their clients told; started ones are left', async () => {
    const stream = 'td:shed-test';
    await commands.xgroup('CREATE', stream, 'workers', '$', 'MKSTREAM');
    const q = (id: string) => ['id', id, 'sessionId', `s-${id}`, 'replyTo', 'td:replies:gw-shed', 'question', 'q?', 'deadline', String(Date.now() + 60_000), 'attempt', '1', 'traceId', `t-${id}`];
    await commands.xadd(stream, '*', ...q('started'));
    await commands.xreadgroup('GROUP', 'workers', 'live-worker', 'COUNT', 1, 'STREAMS', stream, '>');
    for (let i = 0; i < 3; i++) await commands.xadd(stream, '*', ...q(`queued-${i}`));
    const sub = new Redis(redis.url);
    const errors: Array<Record<string, unknown>> = [];
    sub.on('message', (_c: string, m: string) => errors.push(JSON.parse(m) as Record<string, unknown>));
    await sub.subscribe('td:replies:gw-shed');
    const sweeper = new QuestionSweeper({ redis: commands, questionStream: stream, dlqStream: 'td:dlq-shed', by: 'sweeper:test' });
    expect(await sweeper.shedQueued()).toBe(3);
    expect(await sweeper.shedQueued()).toBe(0);
    // Nothing is left for a worker to start, the gate's depth is back to the one started question.
    expect(await commands.xreadgroup('GROUP', 'workers', 'live-worker', 'COUNT', 10, 'STREAMS', stream, '>')).toBeNull();
    const [group] = (await commands.xinfo('GROUPS', stream)) as [Array<string | number>];
    const info = Object.fromEntries(Array.from({ length: group.length / 2 }, (_, k) => [group[2 * k], group[2 * k + 1]]));
    expect(info).toMatchObject({ pending: 1, lag: 0 });
    const letters = (await commands.xrange('td:dlq-shed', '-', '+')) as Array<[string, string[]]>;
    const fields = letters.map(([, flat]) => Object.fromEntries(Array.from({ length: flat.length / 2 }, (_, k) => [flat[2 * k], flat[2 * k + 1]])));
    expect(fields.map((f) => f['id'])).toEqual(['queued-0', 'queued-1', 'queued-2']);
    for (const f of fields) {
      expect(check('DeadLetter', f)).toEqual([]);
      expect(f['reason']).toBe('breaker_open');
    }
    const dlq = new DeadLetterQueue({ redis: commands, stream: 'td:dlq-shed' });
    expect((await dlq.list()).map((d) => d.reason)).toEqual(['breaker_open', 'breaker_open', 'breaker_open']);
    await waitFor('three clients told', () => errors.length >= 3, { pollMs: 10 }).catch(() => undefined);
    sub.disconnect();
    expect(errors).toHaveLength(3);
    for (const e of errors) {
      expect(check('Reply', e)).toEqual([]);
      expect(e).toMatchObject({ type: 'error', code: 'ai_unavailable' });
    }
  });
});
