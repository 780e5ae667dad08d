import { mkdtempSync } from 'node:fs';
import { IncomingMessage, ServerResponse, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Express } from 'express';
import { startTestRedis, type RedisHandle } from '@traffic-dam/stack';
import { startInstance, type TestInstance } from '../testing/instance';

describe('the HTTP server of a gateway (GatewayExpressAdapter)', () => {
  let redis: RedisHandle;
  let gw: TestInstance;

  beforeAll(async () => {
    redis = await startTestRedis(mkdtempSync(join(tmpdir(), 'td-adapter-')));
    gw = await startInstance(redis.url, 'adapter');
  });

  afterAll(async () => {
    await gw?.app.close();
    await redis?.stop();
  });

  it("builds every request and response on Express's prototypes, so Express's own setPrototypeOf changes nothing", async () => {
    const server = gw.app.getHttpServer() as Server;
    const express = gw.app.getHttpAdapter().getInstance() as Express;
    // Their prototypes as the server built them, before Express saw them.
    const seen = new Promise<[IncomingMessage, ServerResponse, object, object]>((resolve) =>
      server.prependOnceListener('request', (req, res) => resolve([req, res, Object.getPrototypeOf(req) as object, Object.getPrototypeOf(res) as object])),
    );
    const res = await fetch(`${gw.url}/health/live?probe=1`);
    expect(res.status).toBe(200);
    const [req, out, builtOn, outBuiltOn] = await seen;
    expect(builtOn).toBe(express.request);
    expect(outBuiltOn).toBe(express.response);
    expect(req).toBeInstanceOf(IncomingMessage);
    expect(out).toBeInstanceOf(ServerResponse);
    expect(req.constructor.name).toBe('IncomingMessage');
    // Express's request and response still work on them.
    const r = req as unknown as Express['request'];
    expect(r.app).toBe(express);
    expect(r.path).toBe('/health/live');
    expect(r.query).toEqual({ probe: '1' });
  });
});
