import type { INestApplication } from '@nestjs/common';
import { DocumentBuilder, SwaggerModule, type OpenAPIObject } from '@nestjs/swagger';
import type { GatewayConfig } from '../common/config/config';
import { ERROR_STATUS, ERROR_TITLE, ErrorCode } from '../common/errors/error-code';
import { ALWAYS, HEADERS, HEADER_DOCS, ROUTES, UNMATCHED, WHEN, ref, type Operation, type Schema } from './openapi-routes';
import { SCHEMAS } from './openapi-schemas';
import { buildAsyncApi } from './asyncapi';

// The document is built from the routes Nest registered (so none can be missing) and then
// filled in from the tables of openapi-routes.ts, the one place that says what each route may answer. The
// controllers stay free of documentation decorators; the integration test compares the two.

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
        'answer `not_found` (404) or `method_not_allowed` (405). The same sessions over Socket.IO (namespace `/chat`, ' +
        'WebSocket only, the same events and codes, one dam budget with SSE) are described by the AsyncAPI document at ' +
        '[/docs-asyncapi](/docs-asyncapi).',
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

/** Serves the UI at /docs, the document at /docs-json, and the Socket.IO contract (AsyncAPI) at /docs-asyncapi. */
export function setupOpenApi(app: INestApplication, config: GatewayConfig): void {
  const doc = buildOpenApi(app, config);
  SwaggerModule.setup('docs', app, doc, { jsonDocumentUrl: 'docs-json', yamlDocumentUrl: 'docs-yaml' });
  const asyncapi = JSON.stringify(buildAsyncApi(config));
  app.getHttpAdapter().get('/docs-asyncapi', (_req: unknown, res: { setHeader(k: string, v: string): void; end(body: string): void }) => {
    res.setHeader('Content-Type', 'application/json; charset=utf-8');
    res.end(asyncapi);
  });
}
