import type { GatewayConfig } from '../common/config/config';
import { ERROR_STATUS, ErrorCode } from '../common/errors/error-code';
import { ref, type Schema } from './openapi-routes';
import { SCHEMAS, SSE_EVENTS, eventSchema } from './openapi-schemas';

/** Problem codes an `ask` can be acknowledged with (as a POST can answer them). */
const ASK_PROBLEMS: ErrorCode[] = [
  ErrorCode.BadRequest,
  ErrorCode.SessionNotFound,
  ErrorCode.QuestionInFlight,
  ErrorCode.QuestionTooLarge,
  ErrorCode.UserRateLimited,
  ErrorCode.AiOverloaded,
  ErrorCode.AiUnavailable,
  ErrorCode.RedisUnavailable,
  ErrorCode.Draining,
  ErrorCode.Internal,
];

/** Problem codes a connect can be refused with (connect_error's data), as GET /chat/stream can. */
const CONNECT_PROBLEMS: ErrorCode[] = [
  ErrorCode.MissingToken,
  ErrorCode.InvalidCredentials,
  ErrorCode.DamFull,
  ErrorCode.UserSessionLimit,
  ErrorCode.RedisUnavailable,
  ErrorCode.Draining,
];

const WHAT: Record<(typeof SSE_EVENTS)[number], string> = {
  session: 'Right after connect: the session (its id and the token that POST and DELETE over HTTP take too).',
  token: 'One token of the answer, seq from 0, in order, once each.',
  done: 'The answer ended; `tokens` is how many came.',
  failed: 'The answer ended without done, with why (see FailedEventData).',
  expired: 'The session ends (idle, lifetime, draining); the server disconnects right after. Do not reconnect on `draining` to the same URL at once: reconnect after a second, through the load balancer.',
};

/**
 * The Socket.IO contract as an AsyncAPI 3.0 document: namespace /chat, the same payloads (the
 * shared schemas) and problem codes as the HTTP contract. Actions are the gateway's: it receives
 * `ask` and sends the rest.
 */
export function buildAsyncApi(config: GatewayConfig): Record<string, unknown> {
  const problem = (codes: ErrorCode[]): Schema => ({
    allOf: [ref('SocketProblem'), { properties: { code: { enum: codes } } }],
    description: codes.map((c) => `\`${c}\` (${ERROR_STATUS[c]})`).join(', '),
  });
  const eventMessages = Object.fromEntries(
    SSE_EVENTS.map((e) => [e, { name: e, summary: WHAT[e], payload: ref(`${eventSchema(e)}Data`) }]),
  );
  return {
    asyncapi: '3.0.0',
    info: {
      title: 'Traffic Dam gateway: Socket.IO',
      version: '1',
      description:
        'Sessions over Socket.IO 4, namespace `/chat`, WebSocket transport only (no long-polling). A connect is a session: ' +
        'it is admitted by the same dam and the same budget of slots as `GET /chat/stream`, so the two transports share ' +
        'one pool per instance. A refused connect is a `connect_error` whose `data` is a problem (`code`, `status`, ' +
        '`retryAfterMs`): do not reconnect before `retryAfterMs`. With AUTH_JWT_SECRET set, send the JWT as the ' +
        'handshake\'s `auth.token`. After `session`, emit `ask` {question} with an acknowledgement: it is {messageId} ' +
        'or a problem with the codes of POST /chat/sessions/{id}/messages; the answer follows as `token` events and one ' +
        '`done` or `failed`. `expired` ends the session; a DELETE /chat/sessions/{id} from any instance disconnects the ' +
        'socket. An `ask` without an acknowledgement that is refused gets a `problem` event instead.',
    },
    servers: {
      edge: {
        host: '127.0.0.1:8080',
        protocol: 'ws',
        pathname: '/socket.io/',
        description: 'nginx in front of the gateways (npm start); Engine.IO 4 handshake `?EIO=4&transport=websocket`, then namespace `/chat`.',
      },
    },
    defaultContentType: 'application/json',
    channels: {
      chat: {
        address: '/chat',
        messages: {
          ...eventMessages,
          ask: {
            name: 'ask',
            summary: 'Ask a question on this socket\'s session; acknowledged with AskAck.',
            payload: { ...ref('QuestionBody'), description: `At most ${config.QUESTION_MAX_CHARS} characters.` },
          },
          askAck: { name: 'ask acknowledgement', payload: { oneOf: [ref('MessageAccepted'), problem(ASK_PROBLEMS)] } },
          problem: { name: 'problem', summary: 'A refused `ask` that had no acknowledgement.', payload: problem(ASK_PROBLEMS) },
          connectError: { name: 'connect_error', summary: 'The connect was refused; `data` is this problem.', payload: problem(CONNECT_PROBLEMS) },
        },
      },
    },
    operations: {
      receiveAsk: {
        action: 'receive',
        channel: { $ref: '#/channels/chat' },
        messages: [{ $ref: '#/channels/chat/messages/ask' }],
        reply: { channel: { $ref: '#/channels/chat' }, messages: [{ $ref: '#/channels/chat/messages/askAck' }] },
      },
      refuseConnect: { action: 'send', channel: { $ref: '#/channels/chat' }, messages: [{ $ref: '#/channels/chat/messages/connectError' }] },
      sendProblem: { action: 'send', channel: { $ref: '#/channels/chat' }, messages: [{ $ref: '#/channels/chat/messages/problem' }] },
      ...Object.fromEntries(
        SSE_EVENTS.map((e) => [`send${eventSchema(e).replace('Event', '')}`, { action: 'send', channel: { $ref: '#/channels/chat' }, messages: [{ $ref: `#/channels/chat/messages/${e}` }] }]),
      ),
    },
    components: {
      schemas: {
        ...SCHEMAS,
        SocketProblem: {
          allOf: [ref('Problem')],
          description: 'A problem over Socket.IO: the RFC 9457 fields and `code` as over HTTP, and when to come back.',
          properties: {
            retryAfterMs: { type: 'integer', minimum: 1000, description: 'Wait at least this long before trying again (where waiting helps).' },
            rateLimit: { type: 'object', description: 'The limit that applies: policy, limit, windowSec, remaining, resetSec.' },
          },
        },
      },
    },
  };
}
