import { SseClient, ask, EDGE_CODES, waitFor, type Stack } from '@traffic-dam/stack';
import { startE2eStack } from './e2e-stack';

const STREAMS_PER_IP = 3;
const QUESTIONS_PER_SEC = 2;

interface Problem {
  status: number;
  code: string;
}

async function damUsed(stack: Stack): Promise<number> {
  const res = await fetch(`${stack.gateways[0]?.url}/dam`);
  return ((await res.json()) as { global: { used: number } }).global.used;
}

// DESIGN.md layer 1: nginx's own per-client-IP limits, answered at the edge before any gateway.
// Every client here is 127.0.0.1, so one address is the flood and the limit is what it meets.
describe('edge limits per client IP (EDGE_STREAMS_PER_IP, EDGE_QUESTIONS_PER_IP_PER_SEC)', () => {
  let stack: Stack;
  const open: SseClient[] = [];

  beforeAll(async () => {
    stack = await startE2eStack({ edge: { streamsPerIp: STREAMS_PER_IP, questionsPerIpPerSec: QUESTIONS_PER_SEC } });
  });

  afterAll(async () => {
    for (const s of open) s.close();
    await stack?.stop();
  });

  it(`lets one address hold ${STREAMS_PER_IP} streams; the next is refused by nginx with 429 ${EDGE_CODES.streams}, and no slot is spent`, async () => {
    for (let i = 0; i < STREAMS_PER_IP; i++) {
      const s = await new SseClient(`${stack.url}/chat/stream`).open();
      open.push(s);
      expect(s.status).toBe(200);
      await s.session();
    }
    const usedBefore = await damUsed(stack);
    const refused = await new SseClient(`${stack.url}/chat/stream`).open();
    expect(refused.status).toBe(429);
    expect(refused.headers.get('content-type')).toContain('application/problem+json');
    expect(refused.headers.get('retry-after')).toBe('1');
    // Answered by nginx itself: no gateway saw it, so the dam's budget did not move.
    expect(refused.headers.get('x-instance-id')).toBeNull();
    expect(refused.refusal).toMatchObject({ status: 429, code: EDGE_CODES.streams } satisfies Problem);
    expect(await damUsed(stack)).toBe(usedBefore);
    // Closing one frees its place at the edge.
    open.shift()?.close();
    const again = await waitFor(
      'the edge admits a stream again',
      async () => {
        const sse = await new SseClient(`${stack.url}/chat/stream`).open();
        if (sse.status === 200) return sse;
        sse.close();
        return null;
      },
      { pollMs: 100 },
    );
    open.push(again);
  });

  it(`lets one address ask ${QUESTIONS_PER_SEC}/s (as many at one instant); the rest of a flood is refused by nginx with 429 ${EDGE_CODES.questions}`, async () => {
    const s = open[0];
    if (!s) throw new Error('no open stream');
    const session = await s.session();
    // Six POSTs at once on one session: the edge passes the burst; the gateway refuses what it
    // must (409, one question in flight per session); nginx refuses the rest itself.
    const results = await Promise.all(Array.from({ length: 6 }, (_, i) => ask(stack.url, session, `edge flood ${i}`)));
    const refusedAtEdge = (r: (typeof results)[number]): boolean => r.status === 429 && (r.body as Problem).code === EDGE_CODES.questions;
    const atEdge = results.filter(refusedAtEdge);
    const passed = results.filter((r) => !refusedAtEdge(r));
    expect(passed.length).toBe(QUESTIONS_PER_SEC);
    expect(atEdge.length).toBe(6 - QUESTIONS_PER_SEC);
    for (const r of passed) expect([202, 409]).toContain(r.status);
    expect(passed.filter((r) => r.status === 202).length).toBe(1);
    // Only questions count: other requests from the same address in the same second still go through.
    const others = await Promise.all(Array.from({ length: 5 }, () => fetch(`${stack.url}/health/live`)));
    expect(others.map((r) => r.status)).toEqual([200, 200, 200, 200, 200]);
  });
});
