import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startTestRedis, type RedisHandle } from './redis';
import { SseClient } from './sse-client';
import { Stack } from './stack';
import { waitFor } from './wait';

interface DamView {
  held: number;
  global: { used: number; capacity: number; live: number } | null;
}

async function dam(url: string): Promise<DamView> {
  return (await (await fetch(`${url}/dam`, { signal: AbortSignal.timeout(2_000) })).json()) as DamView;
}

// The design card's scale-out test: two gateway instances share one budget through Redis (in a
// container wherever an engine answers), and 2,500 users at once meet exactly 2,000 slots.
describe('scale-out: 2 gateway instances behind nginx, Redis from testcontainers', () => {
  let redis: RedisHandle;
  let stack: Stack;
  let streams: SseClient[] = [];

  beforeAll(async () => {
    const dir = mkdtempSync(join(tmpdir(), 'td-scale-out-'));
    redis = await startTestRedis(dir);
    stack = new Stack({ dir, redisUrl: redis.url, gateways: 2, workers: 0, port: 0, env: { LOG_LEVEL: 'warn', DAM_SLOTS_PER_INSTANCE: '1000' } });
    await stack.start();
  }, 120_000);

  afterAll(async () => {
    for (const s of streams) s.close();
    await stack?.stop();
    await redis?.stop();
  });

  it('2,500 users at once: 2,000 admitted (1,000 per instance), 500 refused with 429 dam_full; every slot comes back', async () => {
    await waitFor('both instances in the budget', async () => (await dam(stack.url)).global?.live === 2, 10_000);
    streams = await Promise.all(Array.from({ length: 2_500 }, () => new SseClient(`${stack.url}/chat/stream`).open(30_000)));
    const codes = streams.map((s) => (s.status === 200 ? '200' : `${s.status} ${(s.refusal as { code?: string } | undefined)?.code}`));
    const tally = codes.reduce<Record<string, number>>((acc, c) => ({ ...acc, [c]: (acc[c] ?? 0) + 1 }), {});
    expect(tally).toEqual({ '200': 2_000, '429 dam_full': 500 });

    const admitted = streams.filter((s) => s.status === 200);
    const sessions = await Promise.all(admitted.map((s) => s.session(20_000)));
    const byInstance = new Map<string, number>();
    for (const s of sessions) byInstance.set(s.instanceId, (byInstance.get(s.instanceId) ?? 0) + 1);
    expect([...byInstance.values()]).toEqual([1_000, 1_000]);
    const views = await Promise.all(stack.gateways.map((g) => dam(g.url)));
    expect(views.map((v) => v.held)).toEqual([1_000, 1_000]);
    // An instance's global view is as of its last word from Redis (an admit, or a beat that writes
    // a count decided on the local share when an admission missed its deadline): the next beat at the latest.
    await waitFor('the global view counts both instances', async () => {
      const g = (await dam(stack.url)).global;
      return g?.used === 2_000 && g.capacity === 2_000 && g.live === 2;
    });

    for (const s of admitted) s.close();
    await waitFor('every slot released', async () => (await dam(stack.url)).global?.used === 0, 10_000);
    const fresh = await new SseClient(`${stack.url}/chat/stream`).open();
    streams.push(fresh);
    expect(fresh.status).toBe(200);
  }, 120_000);
});
