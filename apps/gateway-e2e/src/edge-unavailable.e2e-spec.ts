import { SseClient, waitFor, type Stack } from '@traffic-dam/stack';
import { startE2eStack } from './e2e-stack';

/** A refusal as the contract has it: 503, a problem body with a code, and a Retry-After. Returns the code. */
async function unavailableCode(res: Response): Promise<string> {
  const text = await res.text();
  expect({ status: res.status, type: res.headers.get('content-type'), body: text }).toMatchObject({ status: 503, type: expect.stringContaining('application/problem+json') });
  expect(Number(res.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
  const problem = JSON.parse(text) as { status: number; code: string };
  expect(problem.status).toBe(503);
  return problem.code;
}

describe('the edge when no gateway can take a request', () => {
  let stack: Stack;

  beforeAll(async () => {
    // A drain long enough to probe the edge while both gateways refuse.
    stack = await startE2eStack({ env: { LOG_LEVEL: 'warn', DRAIN_GRACE_MS: '3000', DRAIN_INFLIGHT_MS: '3000' } });
  });

  afterAll(async () => {
    await stack?.stop();
  });

  it('answers 503 problem bodies (draining or gateway_unavailable), never a bare 502, and serves again once a gateway is back', async () => {
    const [g0, g1] = stack.gateways;
    if (!g0 || !g1) throw new Error('two gateways expected');
    // A session on each keeps its drain going for DRAIN_GRACE_MS (with none it exits at once).
    const held = await Promise.all([g0, g1].map((g) => new SseClient(`${g.url}/chat/stream`).open()));
    expect(held.map((h) => h.status)).toEqual([200, 200]);
    for (const g of [g0, g1]) g.child.signal('SIGTERM');
    await waitFor('both gateways draining', async () => {
      const ready = await Promise.all([g0, g1].map(async (g) => (await fetch(`${g.url}/health/ready`)).status));
      return ready.every((s) => s === 503);
    });

    // Each gateway refuses the stream with 503 draining and nginx retries the other; then it rests
    // both for their fail_timeout (2 s), in which it has no gateway to try at all (its own 502).
    // Back to back: the requests after the first come within that rest, however slow the machine.
    // (One that came after it would meet a draining gateway again: 503 draining, also a problem.)
    const codes: string[] = [];
    for (let i = 0; i < 5; i++) codes.push(await unavailableCode(await fetch(`${stack.url}/chat/stream`)));
    expect(codes.filter((c) => c !== 'draining' && c !== 'gateway_unavailable')).toEqual([]);
    expect(codes[1]).toBe('gateway_unavailable');

    // Both gone: streams and questions alike get the edge's 503.
    expect(await Promise.all([g0, g1].map((g) => g.child.wait()))).toEqual([0, 0]);
    for (const h of held) expect(h.events.some((e) => e.event === 'expired')).toBe(true);
    expect(await unavailableCode(await fetch(`${stack.url}/chat/stream`))).toBe('gateway_unavailable');
    const question = await fetch(`${stack.url}/chat/sessions/00000000-0000-4000-8000-000000000000/messages`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Authorization: 'Bearer x' },
      body: JSON.stringify({ text: 'hello' }),
    });
    expect(await unavailableCode(question)).toBe('gateway_unavailable');

    // One back on its port: the edge serves again once the gateway's rest is over.
    stack.gateways[0] = await stack.startGateway(0, g0.port);
    await waitFor(
      'the edge admits a stream again',
      async () => {
        const res = await fetch(`${stack.url}/chat/stream`);
        await res.body?.cancel();
        return res.status === 200;
      },
      { pollMs: 200 },
    );
  });
});
