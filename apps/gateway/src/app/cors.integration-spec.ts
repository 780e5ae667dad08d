import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startTestRedis, type RedisHandle } from '@traffic-dam/stack';
import { LifecycleService } from '../common/lifecycle.service';
import { startInstance, type TestInstance } from '../testing/instance';

const APP = 'https://app.example.com';

function preflight(url: string, origin: string): Promise<Response> {
  return fetch(url, {
    method: 'OPTIONS',
    headers: { Origin: origin, 'Access-Control-Request-Method': 'POST', 'Access-Control-Request-Headers': 'authorization,content-type' },
  });
}

describe('CORS policy (CORS_ORIGINS)', () => {
  let redis: RedisHandle;
  let closed: TestInstance;
  let open: TestInstance;

  beforeAll(async () => {
    redis = await startTestRedis(mkdtempSync(join(tmpdir(), 'td-cors-')));
    [closed, open] = await Promise.all([
      startInstance(redis.url, 'cors-default'),
      startInstance(redis.url, 'cors-app', { CORS_ORIGINS: `${APP},http://localhost:5173` }),
    ]);
  });

  afterAll(async () => {
    await Promise.all([closed?.app.close(), open?.app.close()]);
    await redis?.stop();
  });

  it('by default answers no cross-origin request: no Access-Control headers, preflight not served', async () => {
    const res = await fetch(`${closed.url}/health/live`, { headers: { Origin: APP } });
    expect(res.status).toBe(200);
    expect(res.headers.get('access-control-allow-origin')).toBeNull();
    const pre = await preflight(`${closed.url}/chat/sessions/x/messages`, APP);
    expect(pre.headers.get('access-control-allow-origin')).toBeNull();
    expect(pre.headers.get('access-control-allow-methods')).toBeNull();
  });

  it('allows the listed origins, with the methods and headers the API uses, no credentials', async () => {
    const pre = await preflight(`${open.url}/chat/sessions/x/messages`, APP);
    expect(pre.status).toBe(204);
    expect(pre.headers.get('access-control-allow-origin')).toBe(APP);
    expect(pre.headers.get('access-control-allow-methods')).toBe('GET,POST,DELETE');
    expect(pre.headers.get('access-control-allow-headers')?.toLowerCase()).toContain('authorization');
    expect(pre.headers.get('access-control-allow-credentials')).toBeNull();
    const res = await fetch(`${open.url}/health/live`, { headers: { Origin: 'http://localhost:5173' } });
    expect(res.headers.get('access-control-allow-origin')).toBe('http://localhost:5173');
    expect(res.headers.get('vary')).toContain('Origin');
  });

  it('gives another origin nothing', async () => {
    const pre = await preflight(`${open.url}/chat/sessions/x/messages`, 'https://evil.example.net');
    expect(pre.headers.get('access-control-allow-origin')).toBeNull();
    const res = await fetch(`${open.url}/health/live`, { headers: { Origin: 'https://evil.example.net' } });
    expect(res.headers.get('access-control-allow-origin')).toBeNull();
  });

  it('puts the headers on refusals too, with Retry-After readable by the page', async () => {
    const inst = await startInstance(redis.url, 'cors-drain', { CORS_ORIGINS: APP });
    try {
      void inst.app.get(LifecycleService).drain('immediate');
      const res = await fetch(`${inst.url}/chat/stream`, { headers: { Origin: APP } });
      expect(res.status).toBe(503);
      expect(res.headers.get('access-control-allow-origin')).toBe(APP);
      expect(res.headers.get('access-control-expose-headers')).toContain('Retry-After');
      expect(res.headers.get('retry-after')).toBe('1');
    } finally {
      await inst.app.close();
    }
  });
});
