import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import jwt from 'jsonwebtoken';
import { SseClient, startTestRedis, type RedisHandle } from '@traffic-dam/stack';
import { startInstance, type TestInstance } from '../testing/instance';

const SECRET = 'tiers-integration-secret-0123456789abcdef';
const bearer = (sub: string, tier?: string) => `Bearer ${jwt.sign({ sub, ...(tier ? { tier } : {}) }, SECRET, { algorithm: 'HS256', expiresIn: '5m' })}`;

describe('priority tiers from the JWT tier claim (real Redis)', () => {
  let redis: RedisHandle;
  let gw: TestInstance;
  const open: SseClient[] = [];

  beforeAll(async () => {
    redis = await startTestRedis(mkdtempSync(join(tmpdir(), 'td-tiers-')));
    gw = await startInstance(redis.url, 'tiers', { AUTH_JWT_SECRET: SECRET, AUTH_JWT_REQUIRED: 'false', DAM_TIERS: 'pro:20,free', DAM_SLOTS_PER_INSTANCE: '10' });
  });

  afterAll(async () => {
    for (const c of open) c.close();
    await gw?.app.close();
    await redis?.stop();
  });

  async function openAs(sub: string | null, tier?: string): Promise<SseClient> {
    const c = new SseClient(`${gw.url}/chat/stream`, { headers: sub === null ? {} : { Authorization: bearer(sub, tier) } });
    open.push(c);
    return c.open();
  }

  it('keeps the pro share free of lower tiers; a token without a claim is the lowest named tier, no token is anonymous; /dam shows them', async () => {
    const lower = [];
    for (let i = 0; i < 5; i++) lower.push(await openAs(`u${i}`));
    for (let i = 0; i < 5; i++) lower.push(await openAs(null));
    expect(lower.map((c) => c.status)).toEqual([200, 200, 200, 200, 200, 200, 200, 200, 429, 429]);
    expect((await openAs('p1', 'pro')).status).toBe(200);
    expect((await openAs('p2', 'pro')).status).toBe(200);
    expect((await openAs('p3', 'pro')).status).toBe(429);
    const view = (await (await fetch(`${gw.url}/dam`)).json()) as { tiers: Array<{ name: string; sessions: number }> };
    expect(view.tiers.map((t) => [t.name, t.sessions])).toEqual([
      ['pro', 2],
      ['free', 5],
      ['anonymous', 3],
    ]);
  });
});
