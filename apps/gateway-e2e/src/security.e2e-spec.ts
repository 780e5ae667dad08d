import { randomBytes, randomUUID } from 'node:crypto';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import jwt from 'jsonwebtoken';
import { SseClient, ask, waitFor, type Stack } from '@traffic-dam/stack';
import { startE2eStack } from './e2e-stack';

const SECRET = randomBytes(32).toString('hex');

describe('security defaults through nginx', () => {
  let stack: Stack;

  beforeAll(async () => {
    // At debug, where every request and session has its line: none may leak a secret either.
    stack = await startE2eStack({ env: { LOG_LEVEL: 'debug', AUTH_JWT_SECRET: SECRET } });
  });

  afterAll(async () => {
    await stack?.stop();
  });

  it('logs no token (JWT, stream ticket or session) and no question text, at debug level and above', async () => {
    const userJwt = jwt.sign({ sub: 'log-hygiene-user' }, SECRET, { algorithm: 'HS256', expiresIn: '5m' });
    const marker = `MARKER-${randomUUID()}`;
    // A browser's way in: a ticket for the JWT, in the stream's URL; then the same ticket again (refused).
    const issued = await fetch(`${stack.url}/chat/tickets`, { method: 'POST', headers: { Authorization: `Bearer ${userJwt}` } });
    expect(issued.status).toBe(201);
    const { ticket } = (await issued.json()) as { ticket: string };
    const sse = await new SseClient(`${stack.url}/chat/stream?refusal=event&ticket=${ticket}`).open();
    expect(sse.status).toBe(200);
    const s = await sse.session();
    const reused = await new SseClient(`${stack.url}/chat/stream?ticket=${ticket}`).open();
    expect((reused.refusal as { code: string }).code).toBe('invalid_ticket');
    const messageIds: string[] = [];
    try {
      // Several questions, so POSTs land on both instances.
      for (let i = 0; i < 4; i++) {
        const r = await ask(stack.url, s, `${marker} question ${i}: what is in the logs?`);
        expect(r.status).toBe(202);
        const { messageId } = r.body as { messageId: string };
        messageIds.push(messageId);
        await sse.waitFor((e) => e.event === 'done' && (e.data as { messageId: string }).messageId === messageId, 15_000);
      }
      // Refusals are counted, not logged; sent all the same: a wrong session token, a tampered JWT,
      // a body too large with the marker in it.
      const wrong = await ask(stack.url, { sessionId: s.sessionId, token: `${s.token}x` }, `${marker} wrong token`);
      expect(wrong.status).toBe(403);
      const tampered = await new SseClient(`${stack.url}/chat/stream`, { headers: { Authorization: `Bearer ${userJwt}x` } }).open();
      expect(tampered.status).toBe(401);
      const big = await ask(stack.url, s, `${marker} ${'x'.repeat(20_000)}`);
      expect(big.status).toBe(413);
      const del = await fetch(`${stack.url}/chat/sessions/${s.sessionId}`, { method: 'DELETE', headers: { Authorization: `Bearer ${s.token}` } });
      expect(del.status).toBe(204);
    } finally {
      sse.close();
    }
    // nginx flushes its access log every second: wait for the last request, the DELETE, in both logs.
    const deleteLine = `DELETE /chat/sessions/${s.sessionId}`;
    const access = await waitFor('the DELETE in the access log', () => {
      const text = readFileSync(join(stack.opts.dir, 'nginx', 'access.log'), 'utf8');
      return text.includes(deleteLine) ? text : null;
    });
    const files = readdirSync(stack.opts.dir).filter((f) => /^gateway\d+\.log$/.test(f));
    expect(files.length).toBe(2);
    const gatewayLines = () => files.flatMap((f) => readFileSync(join(stack.opts.dir, f), 'utf8').split('\n').filter((l) => l.trim().length > 0));
    const lines = await waitFor('the DELETE in a gateway log', () => {
      const all = gatewayLines();
      return all.some((l) => l.includes(`/chat/sessions/${s.sessionId}`) && l.includes('DELETE')) ? all : null;
    });
    // The log did record these requests (so the check below looks at the right lines)...
    for (const id of messageIds) expect(lines.some((l) => l.includes(id))).toBe(true);
    expect(lines.some((l) => l.includes(s.sessionId))).toBe(true);
    // ...and none of the secrets or the question text, at any level.
    const secrets = { marker, jwt: userJwt, jwtSignature: userJwt.split('.')[2] ?? userJwt, sessionToken: s.token, jwtSecret: SECRET, ticket };
    for (const [name, value] of Object.entries(secrets)) {
      const leaks = lines.filter((l) => l.includes(value));
      expect({ name, leaks }).toEqual({ name, leaks: [] });
    }
    expect(access).toContain(s.sessionId);
    // The streams opened with a ticket are logged, without it.
    expect(access).toContain('GET /chat/stream?[redacted] HTTP/1.1');
    const errors = readFileSync(join(stack.opts.dir, 'nginx', 'error.log'), 'utf8');
    for (const value of [marker, userJwt, s.token, ticket]) {
      expect(access.includes(value)).toBe(false);
      expect(errors.includes(value)).toBe(false);
    }
  });

  it('serves no /admin path at the edge; /metrics only to loopback', async () => {
    for (const path of ['/admin', '/admin/faults', '/admin/dlq']) {
      const res = await fetch(`${stack.url}${path}`);
      expect(res.status).toBe(404);
      // Answered by nginx itself: no gateway saw it.
      expect(res.headers.get('x-instance-id')).toBeNull();
    }
    const conf = readFileSync(join(stack.opts.dir, 'nginx', 'nginx.conf'), 'utf8');
    expect(conf).toMatch(/location = \/metrics \{[^}]*allow 127\.0\.0\.1;[^}]*deny all;/);
    const metrics = await fetch(`${stack.url}/metrics`);
    expect(metrics.status).toBe(200);
  });

  it('serves the OpenAPI UI through nginx, its large assets whole', async () => {
    const gw = stack.gateways[0];
    if (!gw) throw new Error('no gateway');
    const direct = await (await fetch(`${gw.url}/docs/swagger-ui-bundle.js`)).arrayBuffer();
    const viaEdge = await fetch(`${stack.url}/docs/swagger-ui-bundle.js`);
    expect(viaEdge.status).toBe(200);
    expect((await viaEdge.arrayBuffer()).byteLength).toBe(direct.byteLength);
    expect(direct.byteLength).toBeGreaterThan(100_000);
    const doc = (await (await fetch(`${stack.url}/docs-json`)).json()) as { paths: Record<string, unknown> };
    expect(Object.keys(doc.paths)).toContain('/chat/stream');
  });
});
