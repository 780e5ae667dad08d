import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startTestRedis, type RedisHandle } from '@traffic-dam/stack';
import { ERROR_STATUS, ErrorCode } from '../common/errors';
import { startInstance, type TestInstance } from '../testing/instance';

interface Doc {
  openapi: string;
  paths: Record<string, Record<string, { summary?: string; responses: Record<string, { content?: Record<string, { examples?: Record<string, { value: { code: string } }> }> }> }>>;
  components: { schemas: Record<string, { enum?: string[] }>; responses: Record<string, unknown> };
}

/** The routes Express really serves, read from its router: the list the document must cover. */
function servedRoutes(inst: TestInstance): string[] {
  const router = (inst.app.getHttpAdapter().getInstance() as { router: { stack: Array<{ route?: { path: string; methods: Record<string, boolean> } }> } }).router;
  const out: string[] = [];
  for (const layer of router.stack) {
    // Module middleware (request logging, HTTP metrics) is mounted as catch-all `{*path}` routes: not endpoints.
    if (!layer.route || layer.route.path.includes('{*')) continue;
    for (const m of Object.keys(layer.route.methods)) out.push(`${m} ${layer.route.path.replace(/:(\w+)/g, '{$1}')}`);
  }
  return out;
}

describe('OpenAPI at /docs', () => {
  let redis: RedisHandle;
  let inst: TestInstance;
  let doc: Doc;

  beforeAll(async () => {
    redis = await startTestRedis(mkdtempSync(join(tmpdir(), 'td-docs-')));
    inst = await startInstance(redis.url, 'docs', { QUESTION_MAX_CHARS: '123' });
    const res = await fetch(`${inst.url}/docs-json`);
    expect(res.status).toBe(200);
    doc = (await res.json()) as Doc;
  });

  afterAll(async () => {
    await inst?.app.close();
    await redis?.stop();
  });

  it('serves the UI at /docs', async () => {
    const res = await fetch(`${inst.url}/docs`, { redirect: 'follow' });
    expect(res.status).toBe(200);
    expect(await res.text()).toContain('swagger-ui');
  });

  it('documents every route the app serves, each with a summary and its responses', () => {
    const served = servedRoutes(inst).filter((r) => !/ \/docs/.test(r));
    expect(served.length).toBeGreaterThanOrEqual(7);
    const documented = Object.entries(doc.paths).flatMap(([p, item]) => Object.keys(item).map((m) => `${m} ${p}`));
    expect(documented.sort()).toEqual(served.sort());
    for (const r of ['get /chat/stream', 'post /chat/sessions/{sessionId}/messages', 'delete /chat/sessions/{sessionId}', 'get /dam', 'get /health/live', 'get /health/ready', 'get /metrics']) {
      expect(documented).toContain(r);
    }
    for (const item of Object.values(doc.paths)) {
      for (const op of Object.values(item)) {
        expect(op.summary).toBeTruthy();
        expect(Object.keys(op.responses).length).toBeGreaterThan(0);
      }
    }
  });

  it('documents every ErrorCode as a problem+json response with its status', () => {
    const all = Object.values(ErrorCode);
    expect(doc.components.schemas['ErrorCode']?.enum?.sort()).toEqual([...all].sort());
    for (const code of all) expect(doc.components.responses[`problem_${code}`]).toBeDefined();
    // Every code a route can answer appears as an example under its status, as problem+json.
    const seen = new Set<string>();
    for (const item of Object.values(doc.paths)) {
      for (const op of Object.values(item)) {
        for (const [status, r] of Object.entries(op.responses)) {
          for (const ex of Object.values(r.content?.['application/problem+json']?.examples ?? {})) {
            expect(Number(status)).toBe(ERROR_STATUS[ex.value.code as ErrorCode]);
            seen.add(ex.value.code);
          }
        }
      }
    }
    const routeless = [ErrorCode.NotFound, ErrorCode.MethodNotAllowed];
    expect([...all].filter((c) => !seen.has(c) && !routeless.includes(c))).toEqual([]);
    const post = doc.paths['/chat/sessions/{sessionId}/messages']?.['post'];
    const codes503 = Object.values(post?.responses['503']?.content?.['application/problem+json']?.examples ?? {}).map((e) => e.value.code);
    expect(codes503.sort()).toEqual(['ai_overloaded', 'ai_unavailable', 'draining', 'redis_unavailable']);
  });

  it('documents the SSE events of the stream and the configured question limit', () => {
    expect(doc.openapi).toBe('3.1.0');
    const refs = (doc.components.schemas['SseEvent'] as unknown as { oneOf: Array<{ $ref: string }> }).oneOf.map((o) => o.$ref.split('/').pop() ?? '');
    const events = refs.map((name) => (doc.components.schemas[name] as unknown as { properties: { event: { const: string } } }).properties.event.const);
    expect(events).toEqual(['session', 'token', 'done', 'failed', 'expired', 'refused']);
    // Every $ref in the document resolves.
    for (const m of JSON.stringify(doc).matchAll(/"\$ref":"#\/components\/schemas\/(\w+)"/g)) expect(doc.components.schemas[m[1] ?? '']).toBeDefined();
    const expired = doc.components.schemas['ExpiredEventData'] as unknown as { properties: { reason: { enum: string[] } } };
    expect(expired.properties.reason.enum).toEqual(['idle', 'lifetime', 'draining']);
    expect(JSON.stringify(doc.components.schemas['SseEvent'])).toContain(': ping');
    const body = doc.components.schemas['QuestionBody'] as unknown as { properties: { question: { maxLength: number } } };
    expect(body.properties.question.maxLength).toBe(123);
  });
});
