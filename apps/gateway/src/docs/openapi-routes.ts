import { ErrorCode } from '../common/errors/error-code';

// What each route may answer, and when each code happens: the tables docs/openapi.ts fills the
// document from. The controllers stay free of documentation decorators.

export type Schema = Record<string, unknown>;
export type Operation = {
  summary?: string;
  description?: string;
  tags?: string[];
  parameters?: unknown[];
  requestBody?: unknown;
  responses: Record<string, unknown>;
  security?: Array<Record<string, string[]>>;
};

export const ref = (name: string): Schema => ({ $ref: `#/components/schemas/${name}` });

/** Problem codes any route may answer besides its own. */
export const ALWAYS: ErrorCode[] = [ErrorCode.Internal];
/** Codes of requests that match no route: documented once, under components.responses. */
export const UNMATCHED: ErrorCode[] = [ErrorCode.NotFound, ErrorCode.MethodNotAllowed];

export const HEADERS: Partial<Record<ErrorCode, string[]>> = {
  [ErrorCode.DamFull]: ['Retry-After', 'RateLimit', 'RateLimit-Policy'],
  [ErrorCode.UserSessionLimit]: ['Retry-After', 'RateLimit', 'RateLimit-Policy'],
  [ErrorCode.UserRateLimited]: ['Retry-After', 'RateLimit', 'RateLimit-Policy'],
  [ErrorCode.MissingToken]: ['WWW-Authenticate'],
  [ErrorCode.InvalidToken]: ['WWW-Authenticate'],
  [ErrorCode.InvalidCredentials]: ['WWW-Authenticate'],
  [ErrorCode.InvalidTicket]: ['WWW-Authenticate'],
  [ErrorCode.Draining]: ['Retry-After'],
  [ErrorCode.RedisUnavailable]: ['Retry-After'],
  [ErrorCode.AiOverloaded]: ['Retry-After'],
  [ErrorCode.AiUnavailable]: ['Retry-After'],
};

export const HEADER_DOCS: Record<string, Schema> = {
  'Retry-After': { description: 'Seconds to wait before trying again (jittered for dam_full; for ai_overloaded spread over the time the estimated backlog needs to drain).', schema: { type: 'integer', minimum: 1 } },
  RateLimit: { description: 'IETF RateLimit header: remaining quota and seconds to reset.', schema: { type: 'string' } },
  'RateLimit-Policy': { description: 'IETF RateLimit-Policy header: the quota that applies.', schema: { type: 'string' } },
  'WWW-Authenticate': { description: '`Bearer`, or `Bearer error="invalid_token"`.', schema: { type: 'string' } },
};

/** When each code happens, for the reader of /docs. */
export const WHEN: Record<ErrorCode, string> = {
  [ErrorCode.BadJson]: 'the body is not valid JSON',
  [ErrorCode.BadRequest]: 'the body is not {"question": "<text>"} (missing, empty, not a string, unknown fields)',
  [ErrorCode.MissingToken]: 'no `Authorization: Bearer` header (the session token; on GET /chat/stream a JWT when AUTH_JWT_REQUIRED)',
  [ErrorCode.InvalidCredentials]: 'the JWT (GET /chat/stream, POST /chat/tickets) is malformed, expired, or fails issuer/audience/signature checks',
  [ErrorCode.InvalidTicket]: 'the stream ticket (?ticket=) is unknown, already used, or past STREAM_TICKET_TTL_MS',
  [ErrorCode.TicketsDisabled]: 'POST /chat/tickets on a gateway without AUTH_JWT_SECRET (streams need no ticket then)',
  [ErrorCode.DamFull]: 'the global session budget (slots per instance x live instances) is spent',
  [ErrorCode.UserSessionLimit]: 'this user already holds DAM_USER_MAX_SESSIONS open sessions',
  [ErrorCode.UserRateLimited]: 'this user asked DAM_USER_QUESTIONS questions within DAM_USER_QUESTION_WINDOW_SEC',
  [ErrorCode.InvalidToken]: 'the bearer token is not the token of this session',
  [ErrorCode.SessionNotFound]: 'no open session with this id (never existed, closed, or expired)',
  [ErrorCode.NotFound]: 'no route matches the path',
  [ErrorCode.QuestionInFlight]: 'a question on this session has not ended yet (done or failed)',
  [ErrorCode.QuestionTooLarge]: 'the question is over QUESTION_MAX_CHARS characters',
  [ErrorCode.BodyTooLarge]: 'the body is over BODY_MAX_BYTES',
  [ErrorCode.UnsupportedMediaType]: 'the body is not application/json',
  [ErrorCode.MethodNotAllowed]: 'the route exists but not with this method',
  [ErrorCode.RedisUnavailable]:
    'Redis did not answer within its deadline (REDIS_REQUEST_TIMEOUT_MS at least, adapted to measured round trips), or refused the write at its memory limit (the detail says which), or the dam fallback is `reject`',
  [ErrorCode.AiOverloaded]: 'the estimated wait in the AI queue is over DAM_MAX_QUEUE_WAIT_MS',
  [ErrorCode.AiUnavailable]: 'the circuit breaker toward the AI worker is open, or no worker is alive',
  [ErrorCode.Draining]: 'the instance (or the instance holding this session) is shutting down; open a new stream',
  [ErrorCode.Internal]: 'an unexpected error; it was logged with the request id',
};

/** Which problems each route may answer, by "METHOD /path" as Nest registers it. */
export const ROUTES: Record<string, { op: Omit<Operation, 'responses'>; ok: Record<string, unknown>; problems: ErrorCode[] }> = {
  'get /chat/stream': {
    op: {
      tags: ['chat'],
      summary: 'Open a session: a Server-Sent Events stream',
      description:
        'Admitted through the dam, or refused at once. The first event is `session` with the token that POST and ' +
        'DELETE need. Then, per question: `token` events (seq from 0) and one `done` or `failed`. `expired` ends the ' +
        'stream (idle, lifetime, draining); a reconnect after it is 204 (after draining: a new session). Every event has an ' +
        '`id: <resume handle>.<n>`: a reconnect with `Last-Event-ID` within SSE_RESUME_MS gets the same session and the events ' +
        'after n, on any instance, with no new slot (204 when the session is over). A `: ping` comment line comes at least every SSE_PING_MS (15 s). Each ' +
        'event is `event: <name>` and one `data: <JSON>` line; see the schema SseEvent.',
      security: [{}, { jwt: [] }],
      parameters: [
        {
          name: 'ticket',
          in: 'query',
          required: false,
          schema: { type: 'string' },
          description: 'A stream ticket from POST /chat/tickets, instead of the JWT header (EventSource sends no headers). Single use; never logged.',
        },
        {
          name: 'refusal',
          in: 'query',
          required: false,
          schema: { type: 'string', enum: ['event'] },
          description:
            '`event`: a refusal (401, 429, 503 but draining) comes as 200 with one `refused` event (the problem and retryAfterMs) and the end, ' +
            'with `retry:` = the Retry-After (or `id: end` when waiting does not help), so an EventSource can read it. Without it refusals are plain HTTP statuses.',
        },
        {
          name: 'Last-Event-ID',
          in: 'header',
          required: false,
          schema: { type: 'string' },
          description: 'What EventSource sends when it reconnects: the id of the last event it has (`<resume handle>.<n>`, or `end`).',
        },
      ],
    },
    ok: {
      204: { description: 'A reconnect (Last-Event-ID) for a session that is over: expired, deleted, unknown, its instance gone, or its missed events no longer kept. EventSource stops.' },
      200: {
        description: 'The stream. Events as in SseEvent (the `event` field is the SSE event name, `data` the JSON data line).',
        content: { 'text/event-stream': { schema: ref('SseEvent') } },
      },
    },
    problems: [ErrorCode.MissingToken, ErrorCode.InvalidCredentials, ErrorCode.InvalidTicket, ErrorCode.DamFull, ErrorCode.UserSessionLimit, ErrorCode.RedisUnavailable, ErrorCode.Draining],
  },
  'post /chat/tickets': {
    op: {
      tags: ['chat'],
      summary: 'Trade a JWT for a stream ticket (for EventSource, which cannot send headers)',
      description:
        'Send `Authorization: Bearer <jwt>`; the ticket carries its verified identity for one GET /chat/stream?ticket=<ticket> ' +
        'within STREAM_TICKET_TTL_MS (30 s). Only its SHA-256 is stored; taking it deletes it, so a second use is invalid_ticket.',
      security: [{ jwt: [] }],
    },
    ok: { 201: { description: 'The ticket.', content: { 'application/json': { schema: ref('StreamTicket') } } } },
    problems: [ErrorCode.MissingToken, ErrorCode.InvalidCredentials, ErrorCode.TicketsDisabled, ErrorCode.RedisUnavailable],
  },
  'post /chat/sessions/{sessionId}/messages': {
    op: {
      tags: ['chat'],
      summary: 'Ask a question on a session',
      description: 'Any instance takes it; the answer arrives on the session\'s stream as `token` events, then `done` or `failed` with this messageId.',
      security: [{ sessionToken: [] }],
      requestBody: { required: true, content: { 'application/json': { schema: ref('QuestionBody') } } },
    },
    ok: { 202: { description: 'Accepted: the answer comes on the stream.', content: { 'application/json': { schema: ref('MessageAccepted') } } } },
    problems: [
      ErrorCode.BadJson,
      ErrorCode.BadRequest,
      ErrorCode.MissingToken,
      ErrorCode.InvalidToken,
      ErrorCode.SessionNotFound,
      ErrorCode.QuestionInFlight,
      ErrorCode.BodyTooLarge,
      ErrorCode.QuestionTooLarge,
      ErrorCode.UnsupportedMediaType,
      ErrorCode.UserRateLimited,
      ErrorCode.AiOverloaded,
      ErrorCode.AiUnavailable,
      ErrorCode.RedisUnavailable,
      ErrorCode.Draining,
    ],
  },
  'delete /chat/sessions/{sessionId}': {
    op: {
      tags: ['chat'],
      summary: 'Close a session (closing the stream does the same)',
      description: 'Works from any instance; the question in flight, if any, is cancelled and the slot returns.',
      security: [{ sessionToken: [] }],
    },
    ok: { 204: { description: 'Closed.' } },
    problems: [ErrorCode.MissingToken, ErrorCode.InvalidToken, ErrorCode.SessionNotFound, ErrorCode.RedisUnavailable],
  },
  'get /dam': {
    op: { tags: ['operations'], summary: 'The dam as this instance sees it: its slots, the global budget, the fallback, the limits' },
    ok: { 200: { description: 'Status.', content: { 'application/json': { schema: ref('DamStatus') } } } },
    problems: [],
  },
  'get /health/live': {
    op: { tags: ['operations'], summary: 'Liveness: the process answers' },
    ok: { 200: { description: 'Alive.', content: { 'application/json': { schema: ref('Liveness') } } } },
    problems: [],
  },
  'get /health/ready': {
    op: { tags: ['operations'], summary: 'Readiness: Redis answers within 500 ms and the instance is not draining' },
    ok: {
      200: { description: 'Ready.', content: { 'application/json': { schema: ref('Readiness') } } },
      503: { description: 'Not ready (Redis away, or draining): take it out of the load balancer.', content: { 'application/json': { schema: ref('Readiness') } } },
    },
    problems: [],
  },
  'get /metrics': {
    op: { tags: ['operations'], summary: 'Prometheus metrics (text format); nginx serves it only to loopback addresses' },
    ok: { 200: { description: 'Prometheus exposition format 0.0.4.', content: { 'text/plain': { schema: { type: 'string' } } } } },
    problems: [],
  },
};

