import jwt from 'jsonwebtoken';
import { SseClient, ask, waitFor, type Stack } from '@traffic-dam/stack';
import { startE2eStack } from './e2e-stack';

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

describe('priority tiers through nginx: 2 gateways x 50 slots, pro with 20% of the budget and 50% of the AI queue reserved', () => {
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
        DAM_TIERS: 'pro:20:50,free',
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
      ['pro', 20, 0.2, 0.5],
      ['free', 80, 0, 0],
      ['anonymous', 0, 0, 0],
    ]);

    // AI overload, sustained: every free session asks again as soon as its answer ends (50 ms
    // after a refusal), against 20 answers/s and a 2 s limit. Free may fill the queue to half of
    // the limit (pro keeps 50% of its room), pro to all of it.
    const freeSessions = await Promise.all(free.filter((c) => c.status === 200).map((c) => c.session(20_000)));
    const freeStreams = free.filter((c) => c.status === 200);
    const proSessions = await Promise.all(pro.slice(0, 10).map((c) => c.session(20_000)));
    const load = { accepted: 0, refused: 0, done: 0, stop: false };
    const doneOf = (c: SseClient, id: string) => c.waitFor((e) => (e.event === 'done' || e.event === 'failed') && (e.data as { messageId: string }).messageId === id, 60_000);
    const loops = freeSessions.map(async (s, i) => {
      while (!load.stop) {
        const r = await ask(stack.url, s, 'free question', 30_000);
        if (r.status === 202) {
          load.accepted++;
          await doneOf(freeStreams[i] as SseClient, (r.body as { messageId: string }).messageId);
          load.done++;
        } else {
          load.refused++;
          await new Promise((resolve) => setTimeout(resolve, 50));
        }
      }
    });
    // Saturated: the AI has answered for a while at its pace, and free questions are being refused.
    await waitFor('the AI saturated by free users', () => load.done >= 100 && load.refused >= 100, 90_000);
    const proAsked = await Promise.all(proSessions.map((s) => ask(stack.url, s, 'pro question', 30_000)));
    const proOutcome = outcomes(proAsked.map((r) => ({ status: r.status, code: (r.body as { code?: string }).code })));
    process.stdout.write(`tiers under AI overload: free ${load.accepted} accepted, ${load.refused} refused so far; pro ${JSON.stringify(proOutcome)}\n`);
    expect(proOutcome).toEqual({ '202': 10 });
    // Every pro question is answered.
    await Promise.all(proAsked.map((r, i) => doneOf(pro[i] as SseClient, (r.body as { messageId: string }).messageId)));
    expect(pro.slice(0, 10).every((c) => c.events.some((e) => e.event === 'done'))).toBe(true);
    load.stop = true;
    await Promise.all(loops);
    expect(load.refused).toBeGreaterThan(0);
  });
});
