import jwt from 'jsonwebtoken';
import { SseClient, ask, type Stack } from '@traffic-dam/stack';
import { eventually, startE2eStack } from './e2e-stack';

const SECRET = 'tiers-e2e-secret-0123456789abcdef-0123456789';
const bearer = (sub: string, tier?: string) => `Bearer ${jwt.sign({ sub, ...(tier ? { tier } : {}) }, SECRET, { algorithm: 'HS256', expiresIn: '10m' })}`;

interface TierView {
  tiers: Array<{ name: string; sessions: number; reserved: { sessions: number; ai: number } }>;
}

function outcomes(results: Array<{ status: number; code?: string }>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const r of results) {
    const key = r.status === 200 || r.status === 202 ? String(r.status) : `${r.status} ${r.code ?? ''}`;
    out[key] = (out[key] ?? 0) + 1;
  }
  return out;
}

describe('priority tiers through nginx: 2 gateways x 50 slots, pro with 20% of the budget and 30% of the AI queue reserved', () => {
  let stack: Stack;
  const open: SseClient[] = [];

  async function streams(n: number, tier: string | undefined, prefix: string): Promise<SseClient[]> {
    const got = await Promise.all(
      Array.from({ length: n }, (_, i) => new SseClient(`${stack.url}/chat/stream`, { headers: { Authorization: bearer(`${prefix}-${i}`, tier) } }).open(30_000)),
    );
    open.push(...got);
    return got;
  }

  beforeAll(async () => {
    stack = await startE2eStack({
      env: {
        AUTH_JWT_SECRET: SECRET,
        DAM_TIERS: 'pro:20:30,free',
        DAM_SLOTS_PER_INSTANCE: '50',
        DAM_USER_QUESTIONS: '0',
        DAM_MAX_QUEUE_WAIT_MS: '2000',
        LOG_LEVEL: 'warn',
      },
      workerEnv: () => ({ AI_CAPACITY_PER_SEC: '20', AI_TTFT_MS: '100', AI_TOKENS_PER_SEC: '50', AI_ANSWER_TOKENS: '5' }),
    });
  });

  afterAll(async () => {
    for (const c of open) c.close();
    await stack?.stop();
  });

  it('with the budget full of free users, a pro user is admitted within its reserved share; under AI overload the free tier is refused first while pro keeps its share of answers', async () => {
    // 100 slots, 20 kept for pro: free users get 80 of 100 tries; a token without a tier claim is free too.
    const free = [...(await streams(90, 'free', 'free')), ...(await streams(10, undefined, 'plain'))];
    expect(outcomes(free.map((c) => ({ status: c.status, code: (c.refusal as { code?: string } | undefined)?.code })))).toEqual({ '200': 80, '429 dam_full': 20 });
    const pro = await streams(20, 'pro', 'pro');
    expect(pro.every((c) => c.status === 200)).toBe(true);
    const onePast = await streams(1, 'pro', 'pro-past');
    expect(onePast[0]?.status).toBe(429);
    const view = (await (await fetch(`${stack.gateways[0]?.url}/dam`)).json()) as TierView;
    expect(view.tiers.map((t) => [t.name, t.sessions, t.reserved.sessions, t.reserved.ai])).toEqual([
      ['pro', 20, 0.2, 0.3],
      ['free', 80, 0, 0],
      ['anonymous', 0, 0, 0],
    ]);

    // AI overload: 80 free questions and 10 pro ones at once against 20 answers/s and a 2 s limit.
    // Free may fill the queue to 70% of the limit (28 questions), pro to all of it (40).
    const freeSessions = await Promise.all(free.filter((c) => c.status === 200).map((c) => c.session(20_000)));
    const proSessions = await Promise.all(pro.slice(0, 10).map((c) => c.session(20_000)));
    const asked = await Promise.all([
      ...freeSessions.map((s) => ask(stack.url, s, 'free question', 30_000).then((r) => ({ tier: 'free', r }))),
      ...proSessions.map((s) => ask(stack.url, s, 'pro question', 30_000).then((r) => ({ tier: 'pro', r }))),
    ]);
    const of = (tier: string) => asked.filter((a) => a.tier === tier).map((a) => ({ status: a.r.status, code: (a.r.body as { code?: string }).code }));
    const freeOutcome = outcomes(of('free'));
    const proOutcome = outcomes(of('pro'));
    process.stdout.write(`tiers under AI overload: free ${JSON.stringify(freeOutcome)}, pro ${JSON.stringify(proOutcome)}\n`);
    expect(proOutcome).toEqual({ '202': 10 });
    expect(freeOutcome['503 ai_overloaded'] ?? 0).toBeGreaterThan(0);
    expect(freeOutcome['202'] ?? 0).toBeLessThanOrEqual(28 + 5);
    // Every pro question is answered.
    await Promise.all(
      asked
        .filter((a) => a.tier === 'pro')
        .map((a, i) => {
          const id = (a.r.body as { messageId: string }).messageId;
          return pro[i]?.waitFor((e) => e.event === 'done' && (e.data as { messageId: string }).messageId === id, 30_000);
        }),
    );
    await eventually('pro answered', () => pro.slice(0, 10).every((c) => c.events.some((e) => e.event === 'done')), 5_000);
  });
});
