import { parseHeartbeat, parseReply, parseReplyBatch, protocolKeys, questionToFields, type Question } from './protocol';
import { protocolValidator } from './schema';

const check = protocolValidator();

const question: Question = {
  id: 'm-1',
  sessionId: 's-1',
  replyTo: 'td:replies:gw0-1-abc',
  question: 'why is the sky blue?',
  deadline: 1_795_000_000_000,
  attempt: 1,
  traceId: 'req-1',
};

function fieldsToObject(fields: string[]): Record<string, string> {
  const o: Record<string, string> = {};
  for (let i = 0; i < fields.length; i += 2) o[fields[i] as string] = fields[i + 1] as string;
  return o;
}

describe('protocol shapes agree with the JSON Schema', () => {
  it('a question as written to the stream is a schema Question', () => {
    expect(check('Question', fieldsToObject(questionToFields(question)))).toEqual([]);
  });

  it.each([
    { type: 'token', messageId: 'm', sessionId: 's', seq: 0, text: 'hi ' },
    { type: 'done', messageId: 'm', sessionId: 's', tokens: 12 },
    { type: 'done', messageId: 'm', sessionId: 's', tokens: 12, usage: { model: 'llama3.1:8b', promptTokens: 9, completionTokens: 12, counted: false } },
    { type: 'error', messageId: 'm', sessionId: 's', code: 'deadline_exceeded', message: 'late' },
  ])('accepts the valid $type reply on both sides', (reply) => {
    expect(check('Reply', reply)).toEqual([]);
    expect(parseReply(JSON.stringify(reply))).toEqual(reply);
  });

  it.each([
    ['not JSON', '{'],
    ['null', 'null'],
    ['unknown type', JSON.stringify({ type: 'tok', messageId: 'm', sessionId: 's', seq: 0, text: '' })],
    ['negative seq', JSON.stringify({ type: 'token', messageId: 'm', sessionId: 's', seq: -1, text: '' })],
    ['missing session', JSON.stringify({ type: 'done', messageId: 'm', tokens: 1 })],
    ['unknown error code', JSON.stringify({ type: 'error', messageId: 'm', sessionId: 's', code: 'oops', message: '' })],
  ])('refuses %s on both sides', (_, raw) => {
    expect(parseReply(raw)).toBeNull();
    let value: unknown;
    try {
      value = JSON.parse(raw);
    } catch {
      return; // not JSON at all: nothing for the schema to judge
    }
    expect(check('Reply', value).length).toBeGreaterThan(0);
  });

  it('reads a batch the schema accepts, in order, with replies of several questions', () => {
    const batch = {
      type: 'batch',
      replies: [
        { type: 'token', messageId: 'm1', sessionId: 's1', seq: 0, text: 'a ' },
        { type: 'token', messageId: 'm2', sessionId: 's2', seq: 4, text: 'b ' },
        { type: 'token', messageId: 'm1', sessionId: 's1', seq: 1, text: 'c ' },
        { type: 'done', messageId: 'm1', sessionId: 's1', tokens: 2 },
      ],
    };
    expect(check('ReplyBatch', batch)).toEqual([]);
    expect(check('ReplyMessage', batch)).toEqual([]);
    expect(parseReplyBatch(JSON.stringify(batch))).toEqual({ replies: batch.replies, invalid: 0 });
  });

  it('a single reply is still a ReplyMessage (a worker of the previous protocol), and a batch is not a Reply', () => {
    const token = { type: 'token', messageId: 'm', sessionId: 's', seq: 0, text: 'hi ' };
    expect(check('ReplyMessage', token)).toEqual([]);
    expect(check('Reply', { type: 'batch', replies: [token] }).length).toBeGreaterThan(0);
    expect(parseReply(JSON.stringify({ type: 'batch', replies: [token] }))).toBeNull();
  });

  it('a bad entry of a batch costs only itself; a payload that is no batch yields nothing', () => {
    const good = { type: 'token', messageId: 'm', sessionId: 's', seq: 0, text: 'x' };
    const withBad = { type: 'batch', replies: [good, { type: 'token', messageId: 'm', seq: 1 }, 7] };
    expect(check('ReplyBatch', withBad).length).toBeGreaterThan(0);
    expect(parseReplyBatch(JSON.stringify(withBad))).toEqual({ replies: [good], invalid: 2 });
    for (const raw of ['{', 'null', JSON.stringify(good), JSON.stringify({ type: 'batch' }), JSON.stringify({ type: 'batch', replies: {} })]) {
      expect(parseReplyBatch(raw)).toEqual({ replies: [], invalid: 1 });
    }
    expect(check('ReplyBatch', { type: 'batch', replies: [] }).length).toBeGreaterThan(0);
  });

  it('names the batch channel beside the reply channel, outside its td:replies: prefix', () => {
    expect(protocolKeys.replyBatchChannel('gw0-1')).toBe('td:reply-batches:gw0-1');
    expect(protocolKeys.replyBatchChannel('gw0-1').startsWith('td:replies:')).toBe(false);
  });

  it('a done whose usage is not one still counts as done, without the usage', () => {
    const bad = { type: 'done', messageId: 'm', sessionId: 's', tokens: 3, usage: { model: '', promptTokens: -1 } };
    expect(check('Reply', bad).length).toBeGreaterThan(0);
    expect(parseReply(JSON.stringify(bad))).toEqual({ type: 'done', messageId: 'm', sessionId: 's', tokens: 3 });
  });

  it('reads a heartbeat the schema accepts and refuses one it does not', () => {
    const measured = { startsPerSec: 4, serviceRatePerSec: 38.5, ttftMs: 212.5, throttledUntil: 0, model: 'simulated' };
    const hb = { workerId: 'w', capacityPerSec: 100, throughputPerSec: 3.5, inFlight: 2, answering: 1, ts: 1, ...measured };
    expect(check('WorkerHeartbeat', hb)).toEqual([]);
    expect(parseHeartbeat(JSON.stringify(hb))).toEqual(hb);
    expect(check('WorkerHeartbeat', { ...hb, serviceRatePerSec: null, ttftMs: null })).toEqual([]);
    expect(parseHeartbeat(JSON.stringify({ ...hb, serviceRatePerSec: null, ttftMs: null }))).toMatchObject({ serviceRatePerSec: null, ttftMs: null });
    expect(parseHeartbeat(JSON.stringify({ ...hb, inFlight: -1 }))).toBeNull();
    expect(parseHeartbeat(JSON.stringify({ ...hb, answering: 0.5 }))).toBeNull();
    // The previous protocol's heartbeat (no `answering`, nothing measured) still counts as a live
    // worker: its completions stand for its starts, and it teaches the gate no service rate.
    const old = { workerId: 'w', capacityPerSec: 100, throughputPerSec: 3.5, inFlight: 2, ts: 1 };
    expect(check('WorkerHeartbeat', old).length).toBeGreaterThan(0);
    expect(parseHeartbeat(JSON.stringify(old))).toEqual({ ...old, answering: 0, startsPerSec: 3.5, serviceRatePerSec: null, ttftMs: null, throttledUntil: 0 });
    expect(parseHeartbeat(null)).toBeNull();
  });
});
