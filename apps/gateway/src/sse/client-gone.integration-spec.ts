import { mkdtempSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { startTestRedis, waitFor, type RedisHandle } from '@traffic-dam/stack';
import { startInstance, type TestInstance } from '../testing/instance';

interface DamView {
  held: number;
  global: { used: number } | null;
  fallback: { active: boolean };
}

const damView = async (url: string): Promise<DamView> => (await (await fetch(`${url}/dam`)).json()) as DamView;

/** Opens GET /chat/stream and gives up after ms, before any byte of the answer. */
function openAndAbort(url: string, ms: number): Promise<void> {
  return new Promise((resolve) => {
    const req = request(`${url}/chat/stream`, { headers: { Accept: 'text/event-stream' } });
    req.on('error', () => resolve());
    req.on('response', (res) => {
      res.destroy();
      resolve();
    });
    req.end();
    setTimeout(() => {
      req.destroy();
      resolve();
    }, ms);
  });
}

describe('a client that gives up while its stream is being admitted (real Redis)', () => {
  let redis: RedisHandle;
  let gw: TestInstance;

  beforeAll(async () => {
    redis = await startTestRedis(mkdtempSync(join(tmpdir(), 'td-gone-')));
    // A stream that did open keeps its slot for SSE_RESUME_MS after it drops (short here).
    gw = await startInstance(redis.url, 'gone-a', { DAM_SLOTS_PER_INSTANCE: '5', DAM_HEARTBEAT_MS: '200', DAM_HEARTBEAT_TTL_MS: '1000', SSE_RESUME_MS: '300' });
  });

  afterAll(async () => {
    await gw.app.close();
    await redis.stop();
  });

  it('does not keep a slot: held and the global count go back to 0', async () => {
    const admin = new Redis(redis.url);
    try {
      // Writes wait 300 ms: the admit falls back after its 20 ms deadline and the session record
      // waits 50 ms, so every client below is gone before the gateway could answer.
      await admin.call('CLIENT', 'PAUSE', '300', 'WRITE');
      await Promise.all(Array.from({ length: 8 }, () => openAndAbort(gw.url, 5)));
      await waitFor('budget whole, out of fallback', async () => {
        const v = await damView(gw.url);
        return v.held === 0 && !v.fallback.active && v.global?.used === 0;
      });
      // And the budget is whole: all 5 slots can be taken again.
      const more = await Promise.all(Array.from({ length: 5 }, () => fetch(`${gw.url}/chat/stream`, { signal: AbortSignal.timeout(2_000) })));
      expect(more.map((r) => r.status)).toEqual([200, 200, 200, 200, 200]);
      for (const r of more) await r.body?.cancel();
      await waitFor('streams released', async () => (await damView(gw.url)).held === 0);
    } finally {
      admin.disconnect();
    }
  });
});
