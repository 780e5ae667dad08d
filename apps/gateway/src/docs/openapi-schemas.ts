import { ERROR_STATUS, ERROR_TITLE, ErrorCode } from '../common/errors/error-code';
import { WHEN, ref, type Schema } from './openapi-routes';

// The JSON Schemas of the contract: problems, bodies, and the session events, shared by the
// OpenAPI document (SSE) and the AsyncAPI document (Socket.IO), whose payloads are the same.

/** The session's events, the same on SSE and Socket.IO. */
export const SSE_EVENTS = ['session', 'token', 'done', 'failed', 'expired'] as const;
/** Only on SSE: a refused stream read by an EventSource (?refusal=event). */
const SSE_ONLY_EVENTS = ['refused'] as const;
const STREAM_EVENTS = [...SSE_EVENTS, ...SSE_ONLY_EVENTS];
/** `done` -> `DoneEvent` (and its data: `DoneEventData`). */
export const eventSchema = (e: string): string => `${e.charAt(0).toUpperCase()}${e.slice(1)}Event`;

export const SCHEMAS: Record<string, Schema> = {
  ErrorCode: {
    type: 'string',
    enum: Object.values(ErrorCode),
    description: Object.values(ErrorCode)
      .map((c) => `- \`${c}\` (${ERROR_STATUS[c]}): ${ERROR_TITLE[c]}; when ${WHEN[c]}.`)
      .join('\n'),
  },
  Problem: {
    type: 'object',
    description: 'RFC 9457 problem details (application/problem+json) with a stable `code`.',
    required: ['type', 'title', 'status', 'detail', 'code'],
    properties: {
      type: { type: 'string', format: 'uri', example: 'https://traffic-dam.dev/problems/dam_full' },
      title: { type: 'string' },
      status: { type: 'integer' },
      detail: { type: 'string' },
      code: ref('ErrorCode'),
      instance: { type: 'string', description: 'The request path.' },
    },
  },
  QuestionBody: {
    type: 'object',
    additionalProperties: false,
    required: ['question'],
    properties: { question: { type: 'string', minLength: 1, description: 'At most QUESTION_MAX_CHARS characters (code points).' } },
  },
  StreamTicket: {
    type: 'object',
    required: ['ticket', 'expiresAt'],
    properties: {
      ticket: { type: 'string', description: 'Put it in GET /chat/stream?ticket=; good once.' },
      expiresAt: { type: 'integer', description: 'Epoch ms after which it is refused.' },
    },
  },
  RefusedEventData: {
    description: 'Only with ?refusal=event: the problem of the refused stream, then the stream ends.',
    allOf: [
      ref('Problem'),
      { type: 'object', properties: { retryAfterMs: { type: 'integer', description: "The Retry-After in ms (also the stream's `retry:`), where waiting helps." } } },
    ],
  },
  MessageAccepted: { type: 'object', required: ['messageId'], properties: { messageId: { type: 'string', format: 'uuid' } } },
  SessionEventData: {
    type: 'object',
    required: ['sessionId', 'token', 'instanceId', 'expiresAt'],
    properties: {
      sessionId: { type: 'string', format: 'uuid' },
      token: { type: 'string', description: 'Send as `Authorization: Bearer <token>` on POST and DELETE; the id alone grants nothing.' },
      instanceId: { type: 'string', description: 'The instance holding this stream.' },
      expiresAt: { type: 'integer', description: 'Epoch ms of the maximum lifetime (DAM_SESSION_MAX_MS).' },
    },
  },
  TokenEventData: {
    type: 'object',
    required: ['messageId', 'seq', 'text'],
    properties: { messageId: { type: 'string', format: 'uuid' }, seq: { type: 'integer', minimum: 0 }, text: { type: 'string' } },
  },
  DoneEventData: {
    type: 'object',
    required: ['messageId', 'tokens'],
    properties: {
      messageId: { type: 'string', format: 'uuid' },
      tokens: { type: 'integer', minimum: 0 },
      usage: {
        type: 'object',
        description: "What the answer cost: from the model server's usage chunk, or counted by the worker (`counted: true`).",
        required: ['model', 'promptTokens', 'completionTokens', 'counted'],
        properties: {
          model: { type: 'string' },
          promptTokens: { type: 'integer', minimum: 0 },
          completionTokens: { type: 'integer', minimum: 0 },
          counted: { type: 'boolean' },
        },
      },
    },
  },
  FailedEventData: {
    type: 'object',
    required: ['messageId', 'code', 'message'],
    properties: {
      messageId: { type: 'string', format: 'uuid' },
      code: {
        type: 'string',
        description:
          'Why the answer ended without done: `deadline_exceeded`, `worker_error`, `bad_question`, `cancelled` (from the worker), ' +
          '`ai_unavailable` (the breaker opened while it waited), `draining` (the instance shut down before it finished), ' +
          '`answer_lost` (tokens were lost between Redis and this gateway, say while its subscriber reconnected; ask again). ' +
          'Every one but `cancelled`, `bad_question` and `answer_lost` is in the dead-letter queue, with that code as its reason ' +
          '(`ai_unavailable`: reason `breaker_open`).',
      },
      message: { type: 'string' },
    },
  },
  ExpiredEventData: {
    type: 'object',
    required: ['reason'],
    properties: { reason: { type: 'string', enum: ['idle', 'lifetime', 'draining'] } },
    description:
      'The server closes the stream right after, with a `retry:` suited to the reason: idle and lifetime 2 s, and the reconnect is ' +
      'answered 204 (EventSource stops); draining 250-1000 ms, and the reconnect gets a new session on another instance.',
  },
  ...Object.fromEntries(
    STREAM_EVENTS.map((e) => [
      eventSchema(e),
      {
        type: 'object',
        required: ['event', 'data'],
        properties: { event: { type: 'string', const: e }, data: ref(`${eventSchema(e)}Data`) },
      },
    ]),
  ),
  SseEvent: {
    description:
      'One event of GET /chat/stream, on the wire `id: <resume handle>.<n>\nevent: <event>\ndata: <JSON data>\n\n`. Keep-alive: a comment line `: ping` ' +
      'at least every 15 s (no event, no data). The stream starts with `retry: 1000`.',
    oneOf: STREAM_EVENTS.map((e) => ref(eventSchema(e))),
    discriminator: { propertyName: 'event', mapping: Object.fromEntries(STREAM_EVENTS.map((e) => [e, `#/components/schemas/${eventSchema(e)}`])) },
  },
  Liveness: {
    type: 'object',
    required: ['status', 'instanceId', 'pid'],
    properties: { status: { type: 'string', enum: ['ok'] }, instanceId: { type: 'string' }, pid: { type: 'integer' } },
  },
  Readiness: {
    type: 'object',
    required: ['status', 'instanceId', 'redis', 'draining'],
    properties: {
      status: { type: 'string', enum: ['ready', 'not_ready'] },
      instanceId: { type: 'string' },
      redis: { type: 'boolean' },
      draining: { type: 'boolean' },
    },
  },
  DamStatus: {
    type: 'object',
    description: 'held: sessions this instance holds; ceiling and share: its local limits; global: used/capacity/live instances from Redis (stale when Redis is away); fallback: whether the Redis fallback is active; limits: the per-user limits in force; ai: the AI path.',
    properties: {
      instanceId: { type: 'string' },
      mode: { type: 'string', enum: ['enforce', 'shadow', 'off'] },
      held: { type: 'integer' },
      ceiling: { type: 'integer' },
      share: { type: 'integer' },
      global: { type: ['object', 'null'], properties: { used: { type: 'integer' }, capacity: { type: 'integer' }, live: { type: 'integer' } } },
      fallback: { type: 'object' },
      limits: { type: 'object' },
      ai: {
        type: 'object',
        description: 'The AI path: the estimated wait of a question asked now (ms; -1 unknown, null when Redis did not answer) and its limit, the line, the live workers, the rate the gate counts on, the breaker.',
        properties: {
          estimatedWaitMs: { type: ['integer', 'null'] },
          maxWaitMs: { type: 'integer' },
          queueDepth: { type: ['integer', 'null'] },
          liveWorkers: { type: 'integer' },
          ratePerSec: { type: 'number' },
          answering: { type: 'integer' },
          breaker: { type: 'string', enum: ['closed', 'half_open', 'open'] },
        },
      },
    },
  },
};

