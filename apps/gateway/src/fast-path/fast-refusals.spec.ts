import { IncomingMessage, ServerResponse } from 'node:http';
import { Duplex } from 'node:stream';
import type { BreakerService } from '../ai/breaker.service';
import { loadConfig } from '../common/config/config';
import { ErrorCode, GatewayException } from '../common/errors';
import type { LifecycleService } from '../common/lifecycle.service';
import type { DamService } from '../dam/dam.service';
import { MetricsService } from '../metrics/metrics.service';
import type { QuestionsService } from '../questions/questions.service';
import { FastRefusals } from './fast-refusals';

/** A socket that keeps what is written to it: a node:http exchange with no network. */
class Wire extends Duplex {
  readonly out: Buffer[] = [];
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: () => void): void {
    this.out.push(Buffer.from(chunk));
    cb();
  }
  override _read(): void {
    // Nothing to read: the request's body is pushed by the test.
  }
}

interface Answer {
  by: 'fast' | 'framework';
  status: number;
  headers: Record<string, string>;
  body: string;
  /** What the framework found as the parsed body, when it got the request. */
  frameworkBody?: unknown;
}

/** The state the fast path reads from the services; each test sets what it needs. */
interface State {
  draining: boolean;
  atCeiling: boolean;
  badJwt: boolean;
  breakerOpen: boolean;
  knownOverload: boolean;
  /** The overload's proof still holds once the body has come. */
  overloadAfterBody: boolean;
}

const SESSION = '0b6b2b58-52a4-4bd2-9cf4-1d1b4f5d4c11';
const TOKEN = 'a'.repeat(43);

function setup(env: Record<string, string> = {}) {
  const s: State = { draining: false, atCeiling: false, badJwt: false, breakerOpen: false, knownOverload: false, overloadAfterBody: true };
  const metrics = new MetricsService('i1');
  const lifecycle = { get draining() { return s.draining; } } as unknown as LifecycleService;
  const dam = {
    refuseAtCeiling: () => {
      if (!s.atCeiling) return null;
      if (s.badJwt) throw new GatewayException(ErrorCode.InvalidCredentials, 'bad');
      return new GatewayException(ErrorCode.DamFull, 'No session slot is free; retry after the given delay.', {
        retryAfterSec: 2,
        rateLimit: { policy: 'sessions', limit: 4, remaining: 0, resetSec: 2 },
      });
    },
  } as unknown as DamService;
  const breaker = {
    refusal: () => (s.breakerOpen ? new GatewayException(ErrorCode.AiUnavailable, 'The AI path is failing; try again shortly.', { retryAfterSec: 5 }) : null),
  } as unknown as BreakerService;
  let known = 0;
  const questions = {
    get refusesAtOnce() {
      return s.knownOverload;
    },
    knownOverloadRefusal: () => {
      if (!s.overloadAfterBody) return null;
      known++;
      return new GatewayException(ErrorCode.AiOverloaded, 'Estimated wait 3.0 s is over the 2.0 s limit.', { retryAfterSec: 3 });
    },
  } as unknown as QuestionsService;
  const config = loadConfig({ ...env });
  let frameworkBody: unknown;
  const fast = new FastRefusals({ config, instanceId: 'i1', lifecycle, dam, breaker, questions, metrics }, (req, res) => {
    frameworkBody = (req as { body?: unknown }).body;
    res.statusCode = 299;
    res.setHeader('X-By', 'framework');
    res.end('framework');
  });

  async function send(method: string, url: string, headers: Record<string, string> = {}, body?: string): Promise<Answer> {
    const wire = new Wire();
    const req = new IncomingMessage(wire as never);
    req.method = method;
    req.url = url;
    req.httpVersionMajor = 1;
    req.httpVersionMinor = 1;
    req.httpVersion = '1.1';
    req.headers = body === undefined ? { ...headers } : { 'content-length': String(Buffer.byteLength(body)), ...headers };
    if (body !== undefined) req.push(body);
    req.push(null);
    const res = new ServerResponse(req);
    res.assignSocket(wire as never);
    frameworkBody = undefined;
    const finished = new Promise<void>((resolve) => res.on('finish', () => resolve()));
    fast.handle(req, res);
    await finished;
    const raw = Buffer.concat(wire.out).toString();
    const [head = '', text = ''] = raw.split('\r\n\r\n');
    const [statusLine = '', ...lines] = head.split('\r\n');
    const out: Record<string, string> = {};
    for (const l of lines) out[l.slice(0, l.indexOf(':')).toLowerCase()] = l.slice(l.indexOf(':') + 2);
    return { by: out['x-by'] === 'framework' ? 'framework' : 'fast', status: Number(statusLine.split(' ')[1]), headers: out, body: text, frameworkBody };
  }

  const count = async (name: string, labels: string): Promise<number> => {
    const text = await metrics.registry.metrics();
    const line = text.split('\n').find((l) => l.startsWith(`${name}{`) && l.includes(labels));
    return line ? Number(line.slice(line.lastIndexOf(' ') + 1)) : 0;
  };
  return { s, send, count, known: () => known };
}

const postQuestion = (extra: Record<string, string> = {}, body = '{"question":"hi"}') =>
  ['POST', `/chat/sessions/${SESSION}/messages`, { 'content-type': 'application/json', authorization: `Bearer ${TOKEN}`, ...extra }, body] as const;

describe('FastRefusals', () => {
  it('leaves everything to the framework while nothing is refused without Redis', async () => {
    const t = setup();
    for (const [m, u] of [
      ['GET', '/chat/stream'],
      ['GET', '/chat/stream?refusal=event'],
      ['GET', '/health/live'],
      ['DELETE', `/chat/sessions/${SESSION}`],
      ['POST', `/chat/sessions/${SESSION}/messages`],
    ] as const) {
      expect((await t.send(m, u)).by).toBe('framework');
    }
  });

  it('answers a stream at the ceiling with the problem, its headers, and counts it', async () => {
    const t = setup();
    t.s.atCeiling = true;
    const a = await t.send('GET', '/chat/stream?x=1', { 'x-request-id': 'req-1' });
    expect(a).toMatchObject({ by: 'fast', status: 429 });
    expect(a.headers).toMatchObject({
      'x-request-id': 'req-1',
      'x-instance-id': 'i1',
      'retry-after': '2',
      ratelimit: '"sessions";r=0;t=2',
      'ratelimit-policy': '"sessions";q=4',
      'content-type': 'application/problem+json; charset=utf-8',
    });
    expect(a.headers['connection']).toBe('keep-alive');
    expect(JSON.parse(a.body)).toEqual({
      type: 'https://traffic-dam.dev/problems/dam_full',
      title: 'Session budget spent; try again shortly',
      status: 429,
      detail: 'No session slot is free; retry after the given delay.',
      code: 'dam_full',
      instance: '/chat/stream?x=1',
    });
    expect(await t.count('td_http_refusals_total', 'route="/chat/stream",code="dam_full"')).toBe(1);
    expect(await t.count('td_http_requests_total', 'method="GET",route="/chat/stream",status="429"')).toBe(1);
    // A request id that is not one is replaced, as the framework does.
    expect((await t.send('GET', '/chat/stream', { 'x-request-id': 'not one!' })).headers['x-request-id']).toMatch(/^[0-9a-f-]{36}$/);
  });

  it('answers ?refusal=event with the refused event (200, not counted as a refusal)', async () => {
    const t = setup();
    t.s.atCeiling = true;
    const a = await t.send('GET', '/chat/stream?refusal=event');
    expect(a).toMatchObject({ by: 'fast', status: 200 });
    expect(a.headers['content-type']).toBe('text/event-stream; charset=utf-8');
    expect(a.body).toMatch(/^retry: 2000\nevent: refused\ndata: \{.*"code":"dam_full".*"retryAfterMs":2000/);
    expect(await t.count('td_http_requests_total', 'route="/chat/stream",status="200"')).toBe(1);
    expect(await t.count('td_http_refusals_total', 'code="dam_full"')).toBe(0);
    // Express's query parser: a repeated flag is not the flag.
    expect((await t.send('GET', '/chat/stream?refusal=event&refusal=event')).status).toBe(429);
  });

  it('leaves a resume, a ticket, a request that offers to wait and a bad JWT to the framework', async () => {
    const t = setup();
    t.s.atCeiling = true;
    expect((await t.send('GET', '/chat/stream', { 'last-event-id': 'abc.3' })).by).toBe('framework');
    expect((await t.send('GET', '/chat/stream', { 'last-event-id': 'end' })).by).toBe('framework');
    expect((await t.send('GET', '/chat/stream?ticket=t')).by).toBe('framework');
    expect((await t.send('GET', '/chat/stream?wait=10')).by).toBe('framework');
    expect((await t.send('GET', '/chat/stream', { prefer: 'wait=10' })).by).toBe('framework');
    expect((await t.send('HEAD', '/chat/stream')).by).toBe('framework');
    expect((await t.send('GET', '/chat/stream/')).by).toBe('framework');
    t.s.badJwt = true;
    expect((await t.send('GET', '/chat/stream')).by).toBe('framework');
  });

  it('refuses every stream while draining, before anything else, and asks proxies to close', async () => {
    const t = setup();
    t.s.draining = true;
    const a = await t.send('GET', '/chat/stream?refusal=event', { 'last-event-id': 'abc.3' });
    expect(a).toMatchObject({ by: 'fast', status: 503 });
    expect(a.headers).toMatchObject({ 'retry-after': '1', connection: 'close' });
    expect(JSON.parse(a.body)).toMatchObject({ code: 'draining', instance: '/chat/stream?refusal=event' });
  });

  it('refuses a question while the breaker is open, before its body is read', async () => {
    const t = setup();
    t.s.breakerOpen = true;
    for (const sessionId of [SESSION, 'not-a-session']) {
      const a = await t.send('POST', `/chat/sessions/${sessionId}/messages`, {}, 'not even JSON');
      expect(a).toMatchObject({ by: 'fast', status: 503 });
      expect(a.headers['retry-after']).toBe('5');
      expect(JSON.parse(a.body)).toMatchObject({ code: 'ai_unavailable', instance: `/chat/sessions/${sessionId}/messages` });
    }
    expect(await t.count('td_http_refusals_total', 'route="/chat/sessions/:id/messages",code="ai_unavailable"')).toBe(2);
  });

  it('under a known overload, reads and checks the body as the framework does, then refuses', async () => {
    const t = setup();
    t.s.knownOverload = true;
    const a = await t.send(...postQuestion());
    expect(a).toMatchObject({ by: 'fast', status: 503 });
    expect(JSON.parse(a.body)).toMatchObject({ code: 'ai_overloaded', detail: 'Estimated wait 3.0 s is over the 2.0 s limit.' });
    expect(a.headers['retry-after']).toBe('3');
    // The body's own refusals come first, as in the framework (its parser, then the question's rules).
    const bad = await t.send(...postQuestion({}, '{"question":'));
    expect(bad).toMatchObject({ by: 'fast', status: 400 });
    expect(JSON.parse(bad.body)).toMatchObject({ code: 'bad_json' });
    expect(JSON.parse((await t.send(...postQuestion({}, '{"question":"hi","x":1}'))).body)).toMatchObject({ code: 'bad_request' });
    expect(JSON.parse((await t.send(...postQuestion({}, JSON.stringify({ question: 'x'.repeat(4_001) })))).body)).toMatchObject({ code: 'question_too_large' });
    expect(t.known()).toBe(1);
  });

  it('under a known overload, leaves to the framework what it checks before the AI gate', async () => {
    const t = setup();
    t.s.knownOverload = true;
    expect((await t.send(...postQuestion({ authorization: '' }))).by).toBe('framework');
    expect((await t.send(...postQuestion({ 'content-type': 'text/plain' }))).by).toBe('framework');
    expect((await t.send(...postQuestion({ prefer: 'wait=5' }))).by).toBe('framework');
    expect((await t.send('POST', `/chat/sessions/${SESSION}/messages?wait=5`, { 'content-type': 'application/json', authorization: `Bearer ${TOKEN}` }, '{"question":"hi"}')).by).toBe('framework');
    expect((await t.send('POST', '/chat/sessions/not-a-session/messages', { 'content-type': 'application/json', authorization: `Bearer ${TOKEN}` }, '{"question":"hi"}')).by).toBe('framework');
    expect(t.known()).toBe(0);
  });

  it('passes a question on with its body read when the proof ran out while the body came', async () => {
    const t = setup();
    t.s.knownOverload = true;
    t.s.overloadAfterBody = false;
    const a = await t.send(...postQuestion());
    expect(a.by).toBe('framework');
    expect(a.frameworkBody).toEqual({ question: 'hi' });
  });

  it('puts the CORS headers of CORS_ORIGINS on its answers, as the framework does', async () => {
    const t = setup({ CORS_ORIGINS: 'https://app.example.com' });
    t.s.atCeiling = true;
    const a = await t.send('GET', '/chat/stream', { origin: 'https://app.example.com' });
    expect(a.headers).toMatchObject({ 'access-control-allow-origin': 'https://app.example.com', vary: 'Origin' });
    expect(a.headers['access-control-expose-headers']).toContain('Retry-After');
    expect((await t.send('GET', '/chat/stream', { origin: 'https://evil.example.net' })).headers['access-control-allow-origin']).toBeUndefined();
  });
});
