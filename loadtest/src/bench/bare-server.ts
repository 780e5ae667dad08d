/**
 * The floor the gateway is compared with: a bare `node:http` server, a child process of the
 * benchmark, doing the same work as the gateway for each figure, and nothing else.
 *
 *   BARE_REFUSAL='{"status":429,"headers":{...},"body":"..."}'
 *       every request (its body read to the end) gets exactly this response: the gateway's own
 *       refusal, captured by the benchmark (status, headers, problem body).
 *   otherwise: the chat contract, in memory
 *       GET /chat/stream: the gateway's stream headers (BARE_STREAM_HEADERS), a `session` event
 *       (random id and token, as the gateway's), `: ping` every SSE_PING_MS (one timer for all);
 *       POST /chat/sessions/{id}/messages: the Bearer token checked, the JSON body parsed, and
 *       with REDIS_URL the question put on the stream (XADD, the gateway's fields, replyTo this
 *       process's channel), 202 {"messageId"}; without REDIS_URL, 202 without a queue;
 *       replies from the worker on that channel, and the batches on its batch channel
 *       (td:reply-batches:<id>), are written to the session's stream as SSE, as they come.
 *   GET /lag: event-loop delay p99 (ms) since the last call (monitorEventLoopDelay, 10 ms
 *       resolution, as prom-client's default metric measures the gateway's), then reset.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import http from 'node:http';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { Redis } from 'ioredis';

const env = process.env;
const port = Number(env['PORT'] ?? 0);
const refusal = env['BARE_REFUSAL'] ? (JSON.parse(env['BARE_REFUSAL']) as { status: number; headers: Record<string, string>; body: string }) : null;
const streamHeaders = JSON.parse(env['BARE_STREAM_HEADERS'] ?? '{"content-type":"text/event-stream","cache-control":"no-cache"}') as Record<string, string>;
const pingMs = Number(env['SSE_PING_MS'] ?? 15_000);
const instanceId = `bare-${process.pid}-${randomBytes(3).toString('hex')}`;
const replyChannel = `td:replies:${instanceId}`;
const questionStream = env['AI_QUESTION_STREAM'] ?? 'td:questions';

const lag = monitorEventLoopDelay({ resolution: 10 });
lag.enable();

interface Session {
  token: string;
  res: http.ServerResponse;
}
const sessions = new Map<string, Session>();

const redis = env['REDIS_URL'] ? new Redis(env['REDIS_URL'], { maxRetriesPerRequest: 1 }) : null;
const subscriber = env['REDIS_URL'] ? new Redis(env['REDIS_URL'], { maxRetriesPerRequest: 1 }) : null;

function sse(res: http.ServerResponse, event: string, data: unknown): void {
  res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
}

interface ReplyMessage {
  type?: string;
  messageId?: string;
  sessionId?: string;
  seq?: number;
  text?: string;
  tokens?: number;
  code?: string;
  message?: string;
  replies?: ReplyMessage[];
}

function relay(m: ReplyMessage): void {
  const s = sessions.get(m.sessionId ?? '');
  if (!s) return;
  if (m.type === 'token') sse(s.res, 'token', { messageId: m.messageId, seq: m.seq, text: m.text });
  else if (m.type === 'done') sse(s.res, 'done', { messageId: m.messageId, tokens: m.tokens });
  else if (m.type === 'error') sse(s.res, 'error', { messageId: m.messageId, code: m.code, message: m.message });
}

if (subscriber) {
  void subscriber.subscribe(replyChannel, replyChannel.replace(/^td:replies:/, 'td:reply-batches:'));
  subscriber.on('message', (_channel: string, raw: string) => {
    let m: ReplyMessage;
    try {
      m = JSON.parse(raw) as ReplyMessage;
    } catch {
      return;
    }
    if (m.type === 'batch') for (const r of m.replies ?? []) relay(r);
    else relay(m);
  });
}

// One timer for every open stream, as the gateway has no timer per session.
setInterval(() => {
  for (const s of sessions.values()) s.res.write(': ping\n\n');
}, pingMs).unref();

function readBody(req: http.IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

function json(res: http.ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': status >= 400 ? 'application/problem+json' : 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

async function ask(req: http.IncomingMessage, res: http.ServerResponse, sessionId: string): Promise<void> {
  const body = await readBody(req);
  const s = sessions.get(sessionId);
  if (!s) return json(res, 404, { code: 'session_not_found' });
  if (req.headers.authorization !== `Bearer ${s.token}`) return json(res, 403, { code: 'invalid_token' });
  let question: unknown;
  try {
    question = (JSON.parse(body) as { question?: unknown }).question;
  } catch {
    return json(res, 400, { code: 'bad_json' });
  }
  if (typeof question !== 'string') return json(res, 400, { code: 'bad_request' });
  const messageId = randomUUID();
  if (redis) {
    await redis.xadd(
      questionStream, 'MAXLEN', '~', '100000', '*',
      'id', messageId, 'sessionId', sessionId, 'replyTo', replyChannel, 'question', question,
      'deadline', String(Date.now() + 30_000), 'attempt', '1', 'traceId', randomUUID(),
    );
  }
  json(res, 202, { messageId });
}

// The gateway mints a request id per response: so does this server, where the captured headers have one.
const mintsRequestId = (h: Record<string, string>): boolean => 'x-request-id' in h;
const withRequestId = (h: Record<string, string>): Record<string, string> => (mintsRequestId(h) ? { ...h, 'x-request-id': randomUUID() } : h);

const server = http.createServer((req, res) => {
  if (refusal && req.url !== '/health/live') {
    req.resume();
    req.on('end', () => {
      res.writeHead(refusal.status, withRequestId(refusal.headers));
      res.end(refusal.body);
    });
    return;
  }
  const url = req.url ?? '/';
  if (req.method === 'GET' && url.startsWith('/chat/stream')) {
    const sessionId = randomUUID();
    const token = randomBytes(32).toString('base64url');
    res.writeHead(200, withRequestId(streamHeaders));
    sse(res, 'session', { sessionId, token, instanceId, expiresAt: Date.now() + 1_800_000 });
    sessions.set(sessionId, { token, res });
    req.on('close', () => sessions.delete(sessionId));
    return;
  }
  const d = /^\/chat\/sessions\/([^/]+)$/.exec(url);
  if (req.method === 'DELETE' && d) {
    // Done with the session, as the gateway's DELETE: the stream ends, 204.
    const s = sessions.get(d[1] as string);
    if (!s) return json(res, 404, { code: 'session_not_found' });
    if (req.headers.authorization !== `Bearer ${s.token}`) return json(res, 403, { code: 'invalid_token' });
    sessions.delete(d[1] as string);
    s.res.end();
    res.writeHead(204, withRequestId({}));
    res.end();
    return;
  }
  const m = /^\/chat\/sessions\/([^/]+)\/messages$/.exec(url);
  if (req.method === 'POST' && m) {
    ask(req, res, m[1] as string).catch(() => json(res, 503, { code: 'redis_unavailable' }));
    return;
  }
  if (req.method === 'GET' && url === '/lag') {
    const p99 = lag.percentile(99) / 1e6;
    lag.reset();
    return json(res, 200, { p99Ms: p99, sessions: sessions.size });
  }
  if (req.method === 'GET' && (url === '/health/ready' || url === '/health/live')) return json(res, 200, { status: 'ready' });
  json(res, 404, { code: 'not_found' });
});
// The gateway's listen backlog is Node's default too; keep-alive as Node's default.
server.listen(port, '127.0.0.1', () => {
  const addr = server.address();
  process.stdout.write(`${JSON.stringify({ ready: true, port: typeof addr === 'object' && addr ? addr.port : port, instanceId })}\n`);
});
process.once('SIGTERM', () => {
  server.closeAllConnections();
  server.close();
  redis?.disconnect();
  subscriber?.disconnect();
  process.exit(0);
});
