import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ManagedChild, SseClient, ask, freePort, httpOk, repoRoot, waitFor, type ChatSession, type Stack } from '@traffic-dam/stack';
import { startE2eStack } from './e2e-stack';

/**
 * The compose edge (infra/compose/nginx.conf) run by Debian's nginx in front of a real stack.
 * Only what needs Docker is replaced: Docker's DNS name and resolver by the gateways' addresses
 * (Debian's nginx 1.22 also lacks `resolve`), the container's listen port and file paths.
 */
function renderComposeEdge(dir: string, port: number, gateways: number[]): string {
  let conf = readFileSync(join(repoRoot(), 'infra/compose/nginx.conf'), 'utf8');
  const swap = (from: string | RegExp, to: string): void => {
    const next = conf.replace(from, to);
    if (next === conf) throw new Error(`infra/compose/nginx.conf changed: ${String(from)} not found; update this test`);
    conf = next;
  };
  swap(/^\s*server gateway:3000 resolve[^;]*;$/m, gateways.map((p) => `    server 127.0.0.1:${p} max_fails=0;`).join('\n'));
  swap(/^\s*resolver 127\.0\.0\.11[^;]*;$/m, '');
  swap(/^(\s*)listen 8080;$/m, `$1listen 127.0.0.1:${port};`);
  swap('pid /tmp/nginx.pid;', `pid ${dir}/nginx.pid;`);
  for (const t of ['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi']) {
    mkdirSync(join(dir, 'tmp', t), { recursive: true });
    swap(`/tmp/${t};`, `${dir}/tmp/${t};`);
  }
  return conf;
}

describe('the compose edge (infra/compose/nginx.conf) in front of 2 gateways', () => {
  let stack: Stack;
  let edge: ManagedChild | undefined;
  let url = '';
  const streams: SseClient[] = [];

  beforeAll(async () => {
    stack = await startE2eStack({ env: { LOG_LEVEL: 'warn' }, workerEnv: () => ({ AI_TTFT_MS: '20', AI_TOKENS_PER_SEC: '200', AI_ANSWER_TOKENS: '3' }) });
    const dir = join(stack.opts.dir, 'compose-edge');
    mkdirSync(dir, { recursive: true });
    const port = await freePort();
    url = `http://127.0.0.1:${port}`;
    const file = join(dir, 'nginx.conf');
    writeFileSync(file, renderComposeEdge(dir, port, stack.gateways.map((g) => g.port)));
    // Like the nginx image: in the foreground with -g 'daemon off;'.
    edge = new ManagedChild({
      name: 'compose-edge',
      command: 'nginx',
      args: ['-p', dir, '-c', file, '-e', join(dir, 'error.log'), '-g', 'daemon off;'],
      logFile: join(dir, 'nginx.stdout.log'),
    });
    await waitFor('compose edge', () => httpOk(`${url}/nginx/health`), 15_000, edge);
  });

  afterAll(async () => {
    for (const s of streams) s.close();
    await edge?.stop();
    await stack?.stop();
  });

  it('streams an answer through it, spread over both gateways', async () => {
    const sessions: ChatSession[] = [];
    for (let i = 0; i < 4; i++) {
      const sse = await new SseClient(`${url}/chat/stream`).open();
      streams.push(sse);
      sessions.push(await sse.session());
    }
    // least_conn with the streams held open: both upstreams took some.
    expect(new Set(sessions.map((s) => s.instanceId)).size).toBe(2);
    const first = sessions[0];
    const sse = streams[0];
    if (!first || !sse) throw new Error('no session');
    const r = await ask(url, first, 'through the compose edge?');
    expect(r.status).toBe(202);
    const { messageId } = r.body as { messageId: string };
    const done = await sse.waitFor((e) => e.event === 'done' && (e.data as { messageId: string }).messageId === messageId, 10_000);
    expect(done.data).toMatchObject({ messageId, tokens: 3 });
    expect(sse.events.filter((e) => e.event === 'token' && (e.data as { messageId: string }).messageId === messageId)).toHaveLength(3);
  });

  it('keeps /metrics and /admin off the public edge, passes the rest with a request id', async () => {
    const gateway = stack.gateways[0];
    if (!gateway) throw new Error('no gateway');
    expect((await fetch(`${gateway.url}/metrics`)).status).toBe(200);
    expect((await fetch(`${url}/metrics`)).status).toBe(404);
    expect((await fetch(`${url}/admin/faults`)).status).toBe(404);
    expect((await fetch(`${url}/admin`)).status).toBe(404);
    const dam = await fetch(`${url}/dam`, { headers: { 'X-Request-Id': 'edge-test-1' } });
    expect(dam.status).toBe(200);
    expect(dam.headers.get('x-request-id')).toBe('edge-test-1');
    const minted = await fetch(`${url}/health/ready`);
    expect(minted.status).toBe(200);
    expect(minted.headers.get('x-request-id')).toMatch(/^[0-9a-f]{32}$/);
    expect(minted.headers.get('server')).toBe('nginx');
  });
});
