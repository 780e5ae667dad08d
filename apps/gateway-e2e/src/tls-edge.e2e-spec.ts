import { connect as h2connect, type ClientHttp2Session } from 'node:http2';
import { request as httpsRequest } from 'node:https';
import { connect as tlsConnect } from 'node:tls';
import { createParser } from 'eventsource-parser';
import { waitFor, type ChatSession, type Stack } from '@traffic-dam/stack';
import { startE2eStack } from './e2e-stack';

/** Events of one SSE response body, fed chunk by chunk. */
class Events {
  readonly list: Array<{ event: string; data: Record<string, unknown> }> = [];
  private readonly parser = createParser({
    onEvent: (e) => this.list.push({ event: e.event ?? 'message', data: JSON.parse(e.data) as Record<string, unknown> }),
  });
  private readonly decoder = new TextDecoder();
  feed(chunk: Buffer): void {
    this.parser.feed(this.decoder.decode(chunk, { stream: true }));
  }
  async session(): Promise<ChatSession> {
    await waitFor('session event', () => this.list.some((e) => e.event === 'session'), 10_000);
    return this.list.find((e) => e.event === 'session')?.data as unknown as ChatSession;
  }
  async answer(messageId: string): Promise<{ tokens: number[]; done: Record<string, unknown> }> {
    const mine = (e: { data: Record<string, unknown> }): boolean => e.data['messageId'] === messageId;
    await waitFor('done event', () => this.list.some((e) => (e.event === 'done' || e.event === 'failed') && mine(e)), 15_000);
    const end = this.list.find((e) => (e.event === 'done' || e.event === 'failed') && mine(e));
    expect(end?.event).toBe('done');
    return { tokens: this.list.filter((e) => e.event === 'token' && mine(e)).map((e) => e.data['seq'] as number), done: end?.data ?? {} };
  }
}

interface Handshake {
  reused: boolean;
  protocol: string | null;
  status: string;
  session?: Buffer;
}

/** One TLS connection with one HTTP/1.1 request; offers `session` for resumption when given. */
function handshake(port: number, ca: string, opts: { session?: Buffer; maxVersion?: 'TLSv1.2' | 'TLSv1.3' }): Promise<Handshake> {
  return new Promise((resolve, reject) => {
    const sock = tlsConnect({ host: '127.0.0.1', port, ca, session: opts.session, maxVersion: opts.maxVersion, ALPNProtocols: ['http/1.1'] });
    let session: Buffer | undefined;
    let reused = false;
    let protocol: string | null = null;
    let head = '';
    // TLS 1.3 tickets come after the handshake, with the first data: keep the last one.
    sock.on('session', (s: Buffer) => (session = s));
    sock.on('secureConnect', () => {
      reused = sock.isSessionReused();
      protocol = sock.getProtocol();
      sock.write('GET /health/live HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n');
    });
    sock.on('data', (c: Buffer) => (head += c.toString('latin1')));
    sock.setTimeout(10_000, () => sock.destroy(new Error('handshake timeout')));
    sock.on('error', reject);
    sock.on('close', () => resolve({ reused, protocol, status: head.split('\r\n')[0] ?? '', session }));
  });
}

describe('HTTPS at the edge (npm start -- --tls): a local CA, HTTP/2, session resumption', () => {
  let stack: Stack;
  let ca = '';
  let port = 0;

  beforeAll(async () => {
    stack = await startE2eStack({ gateways: 1, tls: true, workerEnv: () => ({ AI_TTFT_MS: '20', AI_TOKENS_PER_SEC: '200', AI_ANSWER_TOKENS: '5' }) });
    ca = stack.certificate?.ca ?? '';
    port = Number(new URL(stack.url).port);
  });

  afterAll(async () => {
    await stack?.stop();
  });

  it('serves a stream and a question over HTTPS (HTTP/1.1), with a certificate only the local CA vouches for', async () => {
    expect(stack.url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
    // Without the local CA the certificate is not trusted: this is TLS, and not a public certificate.
    await expect(fetch(`${stack.url}/health/live`)).rejects.toThrow();

    const events = new Events();
    const stream = httpsRequest(`${stack.url}/chat/stream`, { ca, headers: { accept: 'text/event-stream' } });
    const head = new Promise<{ status: number; type: string }>((resolve, reject) => {
      stream.on('response', (res) => {
        res.on('data', (c: Buffer) => events.feed(c));
        resolve({ status: res.statusCode ?? 0, type: String(res.headers['content-type']) });
      });
      stream.on('error', reject);
    });
    stream.end();
    try {
      expect(await head).toEqual({ status: 200, type: expect.stringContaining('text/event-stream') });
      const s = await events.session();
      const posted = await new Promise<{ status: number; body: string }>((resolve, reject) => {
        const req = httpsRequest(`${stack.url}/chat/sessions/${s.sessionId}/messages`, {
          method: 'POST',
          ca,
          headers: { 'content-type': 'application/json', authorization: `Bearer ${s.token}` },
        });
        req.on('response', (res) => {
          let body = '';
          res.on('data', (c: Buffer) => (body += c.toString()));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
        });
        req.on('error', reject);
        req.end(JSON.stringify({ question: 'over TLS?' }));
      });
      expect(posted.status).toBe(202);
      const { messageId } = JSON.parse(posted.body) as { messageId: string };
      const answer = await events.answer(messageId);
      expect(answer.tokens).toEqual([0, 1, 2, 3, 4]);
      expect(answer.done).toMatchObject({ messageId, tokens: 5 });
    } finally {
      stream.destroy();
    }
  });

  it('negotiates HTTP/2 by ALPN: the stream and the question share one connection', async () => {
    const session: ClientHttp2Session = h2connect(stack.url, { ca });
    try {
      await new Promise<void>((resolve, reject) => {
        session.once('connect', () => resolve());
        session.once('error', reject);
      });
      expect(session.alpnProtocol).toBe('h2');
      const events = new Events();
      const stream = session.request({ ':path': '/chat/stream', accept: 'text/event-stream' });
      const status = await new Promise<number>((resolve, reject) => {
        stream.once('response', (h) => resolve(Number(h[':status'])));
        stream.once('error', reject);
      });
      stream.on('data', (c: Buffer) => events.feed(c));
      expect(status).toBe(200);
      const s = await events.session();
      const post = session.request({
        ':method': 'POST',
        ':path': `/chat/sessions/${s.sessionId}/messages`,
        'content-type': 'application/json',
        authorization: `Bearer ${s.token}`,
      });
      post.end(JSON.stringify({ question: 'over HTTP/2?' }));
      const posted = await new Promise<{ status: number; body: string }>((resolve, reject) => {
        let code = 0;
        let body = '';
        post.once('response', (h) => (code = Number(h[':status'])));
        post.on('data', (c: Buffer) => (body += c.toString()));
        post.once('end', () => resolve({ status: code, body }));
        post.once('error', reject);
      });
      expect(posted.status).toBe(202);
      const { messageId } = JSON.parse(posted.body) as { messageId: string };
      const answer = await events.answer(messageId);
      expect(answer.tokens).toEqual([0, 1, 2, 3, 4]);
      stream.close();
    } finally {
      session.close();
    }
  });

  it.each(['TLSv1.3', 'TLSv1.2'] as const)('resumes a %s session: the second connection skips the full handshake', async (maxVersion) => {
    const first = await handshake(port, ca, { maxVersion });
    expect(first).toMatchObject({ reused: false, protocol: maxVersion, status: 'HTTP/1.1 200 OK' });
    expect(first.session).toBeInstanceOf(Buffer);
    const second = await handshake(port, ca, { maxVersion, session: first.session });
    expect(second).toMatchObject({ reused: true, protocol: maxVersion, status: 'HTTP/1.1 200 OK' });
  });
});
