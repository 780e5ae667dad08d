// Shapes of libs/ai-bridge/schema/protocol.schema.json, the one contract with the Python worker.

/** A question as it travels on the Redis Stream. Every field is a string on the wire. */
export interface Question {
  id: string;
  sessionId: string;
  replyTo: string;
  question: string;
  /** Epoch ms after which the answer is worthless. */
  deadline: number;
  /** 1 on first delivery. */
  attempt: number;
  traceId: string;
}

export interface TokenReply {
  type: 'token';
  messageId: string;
  sessionId: string;
  seq: number;
  text: string;
}

/** What an answer cost, per the model server's usage chunk or counted by the worker. */
export interface AnswerUsage {
  model: string;
  promptTokens: number;
  completionTokens: number;
  /** True when the worker counted (the server sent no usage). */
  counted: boolean;
}

export interface DoneReply {
  type: 'done';
  messageId: string;
  sessionId: string;
  tokens: number;
  /** Absent from a worker of the previous protocol. */
  usage?: AnswerUsage;
}

/** `ai_unavailable` comes from a gateway, not a worker: the breaker opened while the question was queued. */
export type ReplyErrorCode = 'deadline_exceeded' | 'worker_error' | 'cancelled' | 'bad_question' | 'ai_unavailable';

export interface ErrorReply {
  type: 'error';
  messageId: string;
  sessionId: string;
  code: ReplyErrorCode;
  message: string;
}

export type Reply = TokenReply | DoneReply | ErrorReply;

/** Replies bound for one instance in one message, on its batch channel, in the order produced. */
export interface ReplyBatch {
  type: 'batch';
  replies: Reply[];
}

export interface WorkerHeartbeat {
  workerId: string;
  capacityPerSec: number;
  throughputPerSec: number;
  /** Questions the worker holds: waiting for a start slot, or being answered. */
  inFlight: number;
  /** Of those, answers started and not ended; 0 from a worker that does not report it. */
  answering: number;
  ts: number;
  /** Answers it started per second over its last 5 s (a worker of the previous protocol: its throughputPerSec). */
  startsPerSec: number;
  /** Its start rate while questions waited in its line: its measured service rate; null when it had no line long enough. */
  serviceRatePerSec: number | null;
  /** Mean time from start to first token over its last 5 s; null with too few answers. */
  ttftMs: number | null;
  /** Epoch ms before which it starts nothing (the model server's Retry-After); 0 when not throttled. */
  throttledUntil: number;
  model?: string;
}

const REPLY_ERROR_CODES: ReadonlySet<string> = new Set<ReplyErrorCode>([
  'deadline_exceeded',
  'worker_error',
  'cancelled',
  'bad_question',
  'ai_unavailable',
]);

/** Redis key names of the protocol. */
export const protocolKeys = {
  replyChannel: (instanceId: string): string => `td:replies:${instanceId}`,
  /** Where a worker publishes ReplyBatch messages for the instance; one that reaches nobody there publishes singly on replyChannel. */
  replyBatchChannel: (instanceId: string): string => `td:reply-batches:${instanceId}`,
  cancel: (messageId: string): string => `td:cancel:${messageId}`,
  workerHeartbeat: (workerId: string): string => `td:workers:${workerId}`,
  workerHeartbeatPattern: 'td:workers:*',
} as const;

/** Flattens a question into the field/value list XADD takes. */
export function questionToFields(q: Question): string[] {
  return [
    'id', q.id,
    'sessionId', q.sessionId,
    'replyTo', q.replyTo,
    'question', q.question,
    'deadline', String(q.deadline),
    'attempt', String(q.attempt),
    'traceId', q.traceId,
  ];
}

function isNonEmptyString(v: unknown): v is string {
  return typeof v === 'string' && v.length > 0;
}

function isCount(v: unknown): v is number {
  return typeof v === 'number' && Number.isInteger(v) && v >= 0;
}

/**
 * Parses one Pub/Sub payload. Returns null for anything that is not a valid reply, because a
 * bad message from one worker must not take the gateway's subscriber down.
 */
export function parseReply(raw: string): Reply | null {
  const v = parseJson(raw);
  return v === undefined ? null : replyOf(v);
}

/**
 * Parses one ReplyBatch payload: its valid replies in order, and how many entries were not
 * replies (a bad entry costs only itself). The whole payload not a batch: no replies, 1 invalid.
 */
export function parseReplyBatch(raw: string): { replies: Reply[]; invalid: number } {
  const v = parseJson(raw);
  if (typeof v !== 'object' || v === null) return { replies: [], invalid: 1 };
  const m = v as Record<string, unknown>;
  const items = m['replies'];
  if (m['type'] !== 'batch' || !Array.isArray(items)) return { replies: [], invalid: 1 };
  const replies: Reply[] = [];
  let invalid = 0;
  for (const item of items) {
    const r = replyOf(item);
    if (r === null) invalid++;
    else replies.push(r);
  }
  return { replies, invalid };
}

function parseJson(raw: string): unknown {
  try {
    return JSON.parse(raw) as unknown;
  } catch {
    return undefined;
  }
}

function replyOf(v: unknown): Reply | null {
  if (typeof v !== 'object' || v === null) return null;
  const m = v as Record<string, unknown>;
  if (!isNonEmptyString(m['messageId']) || !isNonEmptyString(m['sessionId'])) return null;
  const head = { messageId: m['messageId'], sessionId: m['sessionId'] };
  switch (m['type']) {
    case 'token':
      return isCount(m['seq']) && typeof m['text'] === 'string'
        ? { type: 'token', ...head, seq: m['seq'], text: m['text'] }
        : null;
    case 'done': {
      if (!isCount(m['tokens'])) return null;
      const usage = parseUsage(m['usage']);
      return usage ? { type: 'done', ...head, tokens: m['tokens'], usage } : { type: 'done', ...head, tokens: m['tokens'] };
    }
    case 'error':
      return typeof m['code'] === 'string' && REPLY_ERROR_CODES.has(m['code']) && typeof m['message'] === 'string'
        ? { type: 'error', ...head, code: m['code'] as ReplyErrorCode, message: m['message'] }
        : null;
    default:
      return null;
  }
}

/** A usage object of a done reply; undefined when absent or not one (the answer still counts as done). */
function parseUsage(v: unknown): AnswerUsage | undefined {
  if (typeof v !== 'object' || v === null) return undefined;
  const u = v as Record<string, unknown>;
  if (!isNonEmptyString(u['model']) || !isCount(u['promptTokens']) || !isCount(u['completionTokens'])) return undefined;
  return { model: u['model'], promptTokens: u['promptTokens'], completionTokens: u['completionTokens'], counted: u['counted'] === true };
}

function isRate(v: unknown): v is number {
  return typeof v === 'number' && Number.isFinite(v) && v >= 0;
}

/** Parses a worker heartbeat value; null when it is not one. */
export function parseHeartbeat(raw: string | null): WorkerHeartbeat | null {
  if (raw === null) return null;
  try {
    const v = JSON.parse(raw) as Record<string, unknown>;
    if (!isNonEmptyString(v['workerId']) || !isRate(v['capacityPerSec'])) return null;
    if (!isRate(v['throughputPerSec']) || !isCount(v['inFlight']) || !isCount(v['ts'])) return null;
    if (v['answering'] !== undefined && !isCount(v['answering'])) return null;
    const opt = (k: string): number | null => (isRate(v[k]) ? (v[k] as number) : null);
    // A worker of the previous protocol says none of the measured fields: nothing is subtracted
    // from the gate's depth, its completions stand for its starts, and it teaches no service rate.
    return {
      workerId: v['workerId'],
      capacityPerSec: v['capacityPerSec'],
      throughputPerSec: v['throughputPerSec'],
      inFlight: v['inFlight'],
      answering: (v['answering'] as number | undefined) ?? 0,
      ts: v['ts'],
      startsPerSec: opt('startsPerSec') ?? v['throughputPerSec'],
      serviceRatePerSec: opt('serviceRatePerSec'),
      ttftMs: opt('ttftMs'),
      throttledUntil: isCount(v['throttledUntil']) ? v['throttledUntil'] : 0,
      ...(isNonEmptyString(v['model']) ? { model: v['model'] } : {}),
    };
  } catch {
    return null;
  }
}
