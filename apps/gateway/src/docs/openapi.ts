import type { INestApplication } from '@nestjs/common';
import { DocumentBuilder, SwaggerModule, type OpenAPIObject } from '@nestjs/swagger';
import type { GatewayConfig } from '../common/config/config';
import { ERROR_STATUS, ERROR_TITLE, ErrorCode } from '../common/errors/error-code';

// The document is built from the routes Nest registered (so none can be missing) and then
// filled in from the tables below, the one place that says what each route may answer. The
// controllers stay free of documentation decorators; the integration test compares the two.

type Schema = Record<string, unknown>;
type Operation = {
  summary?: string;
  description?: string;
  tags?: string[];
  parameters?: unknown[];
  requestBody?: unknown;
  responses: Record<string, unknown>;
  security?: Array<Record<string, string[]>>;
};

const ref = (name: string): Schema => ({ $ref: `#/components/schemas/${name}` });

/** Problem codes any route may answer besides its own. */
const ALWAYS: ErrorCode[] = [ErrorCode.Internal];
/** Codes of requests that match no route: documented once, under components.responses. */
const UNMATCHED: ErrorCode[] = [ErrorCode.NotFound, ErrorCode.MethodNotAllowed];

const HEADERS: Partial<Record<ErrorCode, string[]>> = {
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

const HEADER_DOCS: Record<string, Schema> = {
  'Retry-After': { description: 'Seconds to wait before trying again (jittered for dam_full; for ai_overloaded spread over the time the estimated backlog needs to drain).', schema: { type: 'integer', minimum: 1 } },
  RateLimit: { description: 'IETF RateLimit header: remaining quota and seconds to reset.', schema: { type: 'string' } },
  'RateLimit-Policy': { description: 'IETF RateLimit-Policy header: the quota that applies.', schema: { type: 'string' } },
  'WWW-Authenticate': { description: '`Bearer`, or `Bearer error="invalid_token"`.', schema: { type: 'string' } },
};

/** When each code happens, for the reader of /docs. */
const WHEN: Record<ErrorCode, string> = {
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
  [ErrorCode.RedisUnavailable]: 'Redis did not answer within REDIS_REQUEST_TIMEOUT_MS (or the dam fallback is `reject`)',
  [ErrorCode.AiOverloaded]: 'the estimated wait in the AI queue is over DAM_MAX_QUEUE_WAIT_MS',
  [ErrorCode.AiUnavailable]: 'the circuit breaker toward the AI worker is open, or no worker is alive',
  [ErrorCode.Draining]: 'the instance (or the instance holding this session) is shutting down; open a new stream',
  [ErrorCode.Internal]: 'an unexpected error; it was logged with the request id',
};

/** Which problems each route may answer, by "METHOD /path" as Nest registers it. */
const ROUTES: Record<string, { op: Omit<Operation, 'responses'>; ok: Record<string, unknown>; problems: ErrorCode[] }> = {
  'get /chat/stream': {
    op: {
      tags: ['chat'],
      summary: 'Open a session: a Server-Sent Events stream',
      description:
        'Admitted through the dam, or refused at once. The first event is `session` with the token that POST and ' +
        'DELETE need. Then, per question: `token` events (seq from 0) and one `done` or `failed`. `expired` ends the ' +
        'stream (idle, lifetime, draining). A `: ping` comment line comes at least every SSE_PING_MS (15 s). Each ' +
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
            'with `retry:` = the Retry-After, so an EventSource can read it. Without it refusals are plain HTTP statuses.',
        },
      ],
    },
    ok: {
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

const SSE_EVENTS = ['session', 'token', 'done', 'failed', 'expired', 'refused'] as const;
/** `done` -> `DoneEvent` (and its data: `DoneEventData`). */
const eventSchema = (e: string): string => `${e.charAt(0).toUpperCase()}${e.slice(1)}Event`;

const SCHEMAS: Record<string, Schema> = {
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
      { type: 'object', properties: { retryAfterMs: { type: 'integer', description: 'The Retry-After in ms (also the stream\'s `retry:`), where waiting helps.' } } },
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
    properties: { messageId: { type: 'string', format: 'uuid' }, tokens: { type: 'integer', minimum: 0 } },
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
          '`ai_unavailable` (the breaker opened while it waited), `draining` (the instance shut down before it finished). ' +
          'Every one but `cancelled` and `bad_question` is in the dead-letter queue, with that code as its reason ' +
          '(`ai_unavailable`: reason `breaker_open`).',
      },
      message: { type: 'string' },
    },
  },
  ExpiredEventData: {
    type: 'object',
    required: ['reason'],
    properties: { reason: { type: 'string', enum: ['idle', 'lifetime', 'draining'] } },
    description: 'The server closes the stream right after. `draining`: open a new stream (it lands on another instance).',
  },
  ...Object.fromEntries(
    SSE_EVENTS.map((e) => [
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
      'One event of GET /chat/stream, on the wire `event: <event>\ndata: <JSON data>\n\n`. Keep-alive: a comment line `: ping` ' +
      'at least every 15 s (no event, no data).',
    oneOf: SSE_EVENTS.map((e) => ref(eventSchema(e))),
    discriminator: { propertyName: 'event', mapping: Object.fromEntries(SSE_EVENTS.map((e) => [e, `#/components/schemas/${eventSchema(e)}`])) },
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

function problemExample(code: ErrorCode): Schema {
  const status = ERROR_STATUS[code];
  return {
    summary: `${code}: ${WHEN[code]}`,
    value: { type: `https://traffic-dam.dev/problems/${code}`, title: ERROR_TITLE[code], status, detail: WHEN[code], code, instance: '/path' },
  };
}

/** One response per status, each code an example, with the headers that come with them. */
function problemResponses(codes: ErrorCode[]): Record<string, unknown> {
  const byStatus = new Map<number, ErrorCode[]>();
  for (const c of codes) byStatus.set(ERROR_STATUS[c], [...(byStatus.get(ERROR_STATUS[c]) ?? []), c]);
  const out: Record<string, unknown> = {};
  for (const [status, cs] of [...byStatus].sort((a, b) => a[0] - b[0])) {
    const headers = [...new Set(cs.flatMap((c) => HEADERS[c] ?? []))];
    out[String(status)] = {
      description: cs.map((c) => `\`${c}\`: ${WHEN[c]}`).join('; '),
      ...(headers.length > 0 ? { headers: Object.fromEntries(headers.map((h) => [h, HEADER_DOCS[h]])) } : {}),
      content: { 'application/problem+json': { schema: ref('Problem'), examples: Object.fromEntries(cs.map((c) => [c, problemExample(c)])) } },
    };
  }
  return out;
}

/** The OpenAPI document of this instance's routes. Throws if a route has no entry in ROUTES. */
export function buildOpenApi(app: INestApplication, config: GatewayConfig): OpenAPIObject {
  const base = new DocumentBuilder()
    .setOpenAPIVersion('3.1.0')
    .setTitle('Traffic Dam gateway')
    .setVersion('1')
    .setDescription(
      'Chat gateway for streamed LLM answers with flow control (the dam). Every refusal is fast and explicit: an ' +
        'application/problem+json body with a stable `code` (schema ErrorCode lists every one with its status), ' +
        '`Retry-After` where waiting helps and `RateLimit-*` where a limit applies. Requests that match no route ' +
        'answer `not_found` (404) or `method_not_allowed` (405).',
    )
    .addBearerAuth({ type: 'http', scheme: 'bearer', description: 'The `token` of the session event.' }, 'sessionToken')
    .addBearerAuth({ type: 'http', scheme: 'bearer', bearerFormat: 'JWT', description: 'HS256 JWT when AUTH_JWT_SECRET is set (its `sub` is the user).' }, 'jwt')
    .build();
  const doc = SwaggerModule.createDocument(app, base);
  const paths = doc.paths as Record<string, Record<string, Operation>>;
  const missing: string[] = [];
  for (const [path, item] of Object.entries(paths)) {
    for (const [method, op] of Object.entries(item)) {
      const spec = ROUTES[`${method} ${path}`];
      if (!spec) {
        missing.push(`${method.toUpperCase()} ${path}`);
        continue;
      }
      const params = (op.parameters ?? []) as Array<{ name?: string; schema?: Schema; description?: string }>;
      for (const p of params) {
        if (p.name === 'sessionId') Object.assign(p, { schema: { type: 'string', format: 'uuid' }, description: 'From the session event.' });
      }
      item[method] = {
        ...op,
        ...spec.op,
        parameters: [...params, ...(spec.op.parameters ?? [])],
        responses: { ...spec.ok, ...problemResponses([...spec.problems, ...ALWAYS]) },
      };
    }
  }
  if (missing.length > 0) throw new Error(`routes without an OpenAPI entry in docs/openapi.ts: ${missing.join(', ')}`);
  const schemas = structuredClone(SCHEMAS);
  const question = schemas['QuestionBody']?.['properties'] as Record<string, Schema>;
  if (question['question']) question['question'] = { ...question['question'], maxLength: config.QUESTION_MAX_CHARS };
  doc.components = {
    ...doc.components,
    schemas: { ...doc.components?.schemas, ...(schemas as NonNullable<OpenAPIObject['components']>['schemas']) },
    responses: Object.fromEntries(Object.values(ErrorCode).map((c) => [`problem_${c}`, problemResponses([c])[String(ERROR_STATUS[c])]])) as never,
  };
  return Object.assign(doc, { 'x-unmatched-route-codes': UNMATCHED });
}

/** Serves the UI at /docs and the document at /docs-json. */
export function setupOpenApi(app: INestApplication, config: GatewayConfig): void {
  const doc = buildOpenApi(app, config);
  SwaggerModule.setup('docs', app, doc, { jsonDocumentUrl: 'docs-json', yamlDocumentUrl: 'docs-yaml' });
}
