import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { firstValueFrom, lastValueFrom, take, toArray } from 'rxjs';
import { startTestRedis, waitFor, type RedisHandle } from '@traffic-dam/stack';
import {
  AI_PATTERNS,
  AiClient,
  EnqueueUnknownError,
  QuestionRefusedError,
  type AskResult,
  AiOverloadedError,
  AnswerTimeoutError,
  UnknownPatternError,
  type AnswerRequest,
  type AskRequest,
  type EnqueueRequest,
} from './ai.client';
import { outcomeKey } from './ask.lua';
import type { Question, Reply } from './protocol';
import { protocolValidator } from './schema';

const STREAM = 'td:questions:transport';
const GROUP = 'workers';

function fieldsOf(flat: string[]): Record<string, string> {
  return Object.fromEntries(Array.from({ length: flat.length / 2 }, (_, i) => [flat[2 * i], flat[2 * i + 1]]));
}

describe('AiClient (a @nestjs/microservices ClientProxy) against real Redis', () => {
  let redis: RedisHandle;
  let commands: Redis;
  let subscriber: Redis;
  let worker: Redis;
  let transport: AiClient;
  let keepUnclaimed = false;
  const unclaimed: Reply[] = [];
  const check = protocolValidator();
  let n = 0;

  const question = (over: Partial<Question> = {}): Question => {
    n++;
    return {
      id: `q-${n}`,
      sessionId: `s-${n}`,
      replyTo: 'td:replies:gw-t',
      question: `question ${n}`,
      deadline: Date.now() + 30_000,
      attempt: 1,
      traceId: `t-${n}`,
      ...over,
    };
  };

  /** Plays the worker: takes the next question off the group and returns it. */
  async function nextQuestion(): Promise<Record<string, string>> {
    let got: Record<string, string> | null = null;
    await waitFor('the next question taken', async () => {
      const res = (await worker.xreadgroup('GROUP', GROUP, 'w1', 'COUNT', 1, 'STREAMS', STREAM, '>')) as
        | Array<[string, Array<[string, string[]]>]>
        | null;
      const entry = res?.[0]?.[1][0];
      if (entry) {
        got = fieldsOf(entry[1]);
        await worker.xack(STREAM, GROUP, entry[0]);
      }
      return got !== null;
    });
    return got as unknown as Record<string, string>;
  }

  const reply = (r: Reply) => worker.publish('td:replies:gw-t', JSON.stringify(r));

  beforeAll(async () => {
    redis = await startTestRedis(mkdtempSync(join(tmpdir(), 'td-transport-')));
    commands = new Redis(redis.url);
    subscriber = new Redis(redis.url);
    worker = new Redis(redis.url);
    await commands.xgroup('CREATE', STREAM, GROUP, '$', 'MKSTREAM');
    transport = new AiClient({ commands, subscriber, instanceId: 'gw-t', questionStream: STREAM, keepMs: 2_000 });
    transport.handleUnclaimed((r) => {
      unclaimed.push(r);
      return keepUnclaimed;
    });
  });

  afterAll(async () => {
    await transport.close();
    commands.disconnect();
    worker.disconnect();
    subscriber.disconnect();
    await redis.stop();
  });

  it('send chat.ask: the question reaches the stream and the answer streams back, in order, until done', async () => {
    const q = question();
    const answer = lastValueFrom(transport.send<Reply, AskRequest>(AI_PATTERNS.ask, { question: q, timeoutMs: 5_000 }).pipe(toArray()));
    const fields = await nextQuestion();
    expect(check('Question', fields)).toEqual([]);
    expect(fields['id']).toBe(q.id);
    await reply({ type: 'token', messageId: q.id, sessionId: q.sessionId, seq: 0, text: 'a ' });
    await reply({ type: 'token', messageId: q.id, sessionId: q.sessionId, seq: 1, text: 'b' });
    await reply({ type: 'done', messageId: q.id, sessionId: q.sessionId, tokens: 2 });
    const got = await answer;
    expect(got.map((r) => r.type)).toEqual(['token', 'token', 'done']);
    expect(transport.watching).toBe(0);
    expect(await commands.exists(`td:cancel:${q.id}`)).toBe(0);
  });

  it('unsubscribing mid-answer cancels the question; finishing normally does not', async () => {
    const q = question();
    const firstToken = firstValueFrom(transport.send<Reply, AskRequest>(AI_PATTERNS.ask, { question: q, timeoutMs: 5_000 }).pipe(take(1)));
    await nextQuestion();
    await reply({ type: 'token', messageId: q.id, sessionId: q.sessionId, seq: 0, text: 'a ' });
    expect((await firstToken).type).toBe('token');
    // take(1) unsubscribed after the first token: the worker is told to stop.
    await waitFor('the question cancelled', async () => (await commands.exists(`td:cancel:${q.id}`)) === 1);
    expect(transport.watching).toBe(0);
  });

  it('send chat.answer ends with AnswerTimeoutError when no done or error comes in time', async () => {
    const started = Date.now();
    await expect(lastValueFrom(transport.send<Reply, AnswerRequest>(AI_PATTERNS.answer, { messageId: 'never', timeoutMs: 200 }))).rejects.toBeInstanceOf(
      AnswerTimeoutError,
    );
    expect(Date.now() - started).toBeGreaterThanOrEqual(190);
    expect(transport.watching).toBe(0);
  });

  it('a reply that comes before its watcher is kept when the owner says so, and delivered once it subscribes', async () => {
    keepUnclaimed = true;
    const q = question();
    await reply({ type: 'token', messageId: q.id, sessionId: q.sessionId, seq: 0, text: 'early ' });
    await waitFor('the early reply kept', () => unclaimed.some((r) => r.messageId === q.id));
    const answer = lastValueFrom(transport.send<Reply, AnswerRequest>(AI_PATTERNS.answer, { messageId: q.id, timeoutMs: 5_000 }).pipe(toArray()));
    await waitFor('the answer watched', () => transport.watching === 1, { pollMs: 10 });
    await reply({ type: 'done', messageId: q.id, sessionId: q.sessionId, tokens: 1 });
    const got = await answer;
    expect(got).toEqual([
      { type: 'token', messageId: q.id, sessionId: q.sessionId, seq: 0, text: 'early ' },
      { type: 'done', messageId: q.id, sessionId: q.sessionId, tokens: 1 },
    ]);
    keepUnclaimed = false;
  });

  it('a kept reply nobody watches in time is dropped and its question cancelled', async () => {
    keepUnclaimed = true;
    const q = question();
    await reply({ type: 'token', messageId: q.id, sessionId: q.sessionId, seq: 0, text: 'early ' });
    await waitFor('the early reply kept', () => unclaimed.some((r) => r.messageId === q.id));
    // The next reply to arrive, past the keep time, evicts it.
    await waitFor('the kept reply dropped and its question cancelled', async () => {
      await reply({ type: 'token', messageId: `${q.id}-later`, sessionId: q.sessionId, seq: 0, text: 'x' });
      return (await commands.exists(`td:cancel:${q.id}`)) === 1;
    });
    keepUnclaimed = false;
  });

  it('enqueue is once per message id; one settled as refused first is never queued', async () => {
    const q = question();
    const before = await commands.xlen(STREAM);
    const first = await transport.enqueue({ question: q, gate: { maxWaitMs: 60_000, throughputPerSec: 100 } });
    const again = await transport.enqueue({ question: q, gate: { maxWaitMs: 60_000, throughputPerSec: 100 } });
    expect(first.status).toBe('queued');
    expect(again).toMatchObject({ status: 'queued', entryId: (first as { entryId: string }).entryId });
    expect(await commands.xlen(STREAM)).toBe(before + 1);
    const lost = question();
    await commands.set(outcomeKey(STREAM, lost.id), 'refused', 'PX', 60_000);
    await expect(transport.enqueue({ question: lost })).rejects.toBeInstanceOf(QuestionRefusedError);
    expect(await commands.xlen(STREAM)).toBe(before + 1);
    await nextQuestion();
  });

  it('an enqueue answered too late is decided by the settle behind it; both too late is refused and cancelled', async () => {
    let late = 0;
    // Each of the first `late` calls a request waits for is over its deadline (the call still runs).
    const bound = <T>(p: Promise<T>): Promise<T> => (late-- > 0 ? Promise.reject(new Error('deadline')) : p);
    const slowSubscriber = new Redis(redis.url);
    const slow = new AiClient({ commands, subscriber: slowSubscriber, instanceId: 'gw-slow', questionStream: STREAM, bound });
    try {
      late = 1;
      const q = question();
      expect(await slow.enqueue({ question: q })).toMatchObject({ status: 'queued' });
      expect((await nextQuestion())['id']).toBe(q.id);
      late = 2;
      const lost = question();
      await expect(slow.enqueue({ question: lost })).rejects.toBeInstanceOf(EnqueueUnknownError);
      // Redis did queue it: the worker is told to stop before it starts.
      await waitFor('the lost question cancelled', async () => (await commands.exists(`td:cancel:${lost.id}`)) === 1);
      expect((await nextQuestion())['id']).toBe(lost.id);
    } finally {
      await slow.close();
      slowSubscriber.disconnect();
    }
  });

  it('a token nobody claims cancels its question (the client is gone)', async () => {
    const q = question();
    await reply({ type: 'token', messageId: q.id, sessionId: q.sessionId, seq: 0, text: 'void ' });
    await waitFor('the question cancelled', async () => (await commands.exists(`td:cancel:${q.id}`)) === 1);
  });

  it('send chat.enqueue goes through the gate: over the allowed wait it is refused and nothing is queued', async () => {
    // Three questions waiting at 1 answer/s is a 3 s wait.
    for (let i = 0; i < 3; i++) await transport.send<AskResult, EnqueueRequest>(AI_PATTERNS.enqueue, { question: question() }).forEach(() => undefined);
    const before = await commands.xlen(STREAM);
    const refused = await lastValueFrom(
      transport.send<AskResult, EnqueueRequest>(AI_PATTERNS.enqueue, { question: question(), gate: { maxWaitMs: 2_000, throughputPerSec: 1 } }),
    );
    expect(refused).toEqual({ status: 'overloaded', waitMs: 3_000, depth: 3, rateWaitMs: 3_000 });
    const ok = await lastValueFrom(
      transport.send<AskResult, EnqueueRequest>(AI_PATTERNS.enqueue, { question: question(), gate: { maxWaitMs: 5_000, throughputPerSec: 1 } }),
    );
    expect(ok.status).toBe('queued');
    expect(await commands.xlen(STREAM)).toBe(before + 1);
    // chat.ask with a gate that refuses errors at once and leaves no watcher behind.
    await expect(
      lastValueFrom(
        transport.send<Reply, AskRequest>(AI_PATTERNS.ask, { question: question(), gate: { maxWaitMs: 1_000, throughputPerSec: 1 }, timeoutMs: 5_000 }),
      ),
    ).rejects.toBeInstanceOf(AiOverloadedError);
    expect(transport.watching).toBe(0);
    for (let i = 0; i < 4; i++) await nextQuestion();
  });

  it('emit chat.cancel marks the question; unknown patterns and foreign reply channels are refused', async () => {
    await lastValueFrom(transport.emit(AI_PATTERNS.cancel, { messageId: 'q-x' }), { defaultValue: undefined });
    expect(await commands.exists('td:cancel:q-x')).toBe(1);
    await expect(lastValueFrom(transport.send('chat.unknown', {}))).rejects.toBeInstanceOf(UnknownPatternError);
    await expect(
      lastValueFrom(transport.send<Reply, AskRequest>(AI_PATTERNS.ask, { question: question({ replyTo: 'td:replies:other' }), timeoutMs: 1_000 })),
    ).rejects.toBeInstanceOf(UnknownPatternError);
    await expect(lastValueFrom(transport.emit('chat.unknown', {}))).rejects.toBeInstanceOf(UnknownPatternError);
  });
});
