import { SseClient, ask, type Stack, waitFor } from '@traffic-dam/stack';
import { startE2eStack } from './e2e-stack';

interface DamView {
  held: number;
  global: { used: number } | null;
}
const dam = async (url: string): Promise<DamView> => (await (await fetch(`${url}/dam`, { signal: AbortSignal.timeout(2_000) })).json()) as DamView;
const seqs = (sse: SseClient, messageId: string) =>
  sse.events.filter((e) => e.event === 'token' && (e.data as { messageId: string }).messageId === messageId).map((e) => (e.data as { seq: number }).seq);

describe('resume across gateway processes (the real worker)', () => {
  let stack: Stack;

  beforeAll(async () => {
    // 40 tokens at 20/s: still answering when the client comes back.
    stack = await startE2eStack({ workerEnv: () => ({ AI_TTFT_MS: '50', AI_TOKENS_PER_SEC: '20', AI_ANSWER_TOKENS: '40' }) });
  });

  afterAll(async () => {
    await stack?.stop();
  });

  it('a stream dropped on one gateway resumes on the other: the rest of the answer, each token once, the slot where it was', async () => {
    const [home, other] = stack.gateways as [(typeof stack.gateways)[0], (typeof stack.gateways)[0]];
    const first = await new SseClient(`${home.url}/chat/stream`).open();
    const s = await first.session();
    const r = await ask(stack.url, s, 'a long one');
    expect(r.status).toBe(202);
    const { messageId } = r.body as { messageId: string };
    await first.waitFor((e) => e.event === 'token' && (e.data as { seq: number }).seq >= 4, 10_000);
    first.close();
    const again = await new SseClient(`${other.url}/chat/stream`, { headers: { 'Last-Event-ID': first.lastEventId ?? '' } }).open();
    expect(again.status).toBe(200);
    // Carried by the other gateway, for the session that stays on its own.
    expect(again.headers.get('x-instance-id')).not.toBe(s.instanceId);
    await again.waitFor((e) => e.event === 'done', 15_000);
    const all = [...seqs(first, messageId), ...seqs(again, messageId)];
    expect(all).toEqual(Array.from({ length: 40 }, (_, i) => i));
    expect([(await dam(home.url)).held, (await dam(other.url)).held, (await dam(stack.url)).global?.used]).toEqual([1, 0, 1]);
    const del = await fetch(`${stack.url}/chat/sessions/${s.sessionId}`, { method: 'DELETE', headers: { Authorization: `Bearer ${s.token}` } });
    expect(del.status).toBe(204);
    expect(await again.ended(5_000)).toBe(true);
    await waitFor('slot back', async () => (await dam(stack.url)).global?.used === 0, 5_000);
  });

  it("a resume after the session's gateway died ends cleanly: 204, and EventSource stops", async () => {
    const [home, other] = stack.gateways as [(typeof stack.gateways)[0], (typeof stack.gateways)[0]];
    const sse = await new SseClient(`${home.url}/chat/stream`).open();
    await sse.session();
    const last = sse.lastEventId;
    home.child.signal('SIGKILL');
    expect(await sse.ended(5_000)).toBe(true);
    try {
      const r = await fetch(`${other.url}/chat/stream`, { headers: { 'Last-Event-ID': last ?? '' }, signal: AbortSignal.timeout(5_000) });
      expect(r.status).toBe(204);
      const resumes = await (await fetch(`${other.url}/metrics`)).text();
      expect(resumes).toMatch(/td_sse_resumes_total\{outcome="unreachable"[^}]*\} 1/);
    } finally {
      await stack.restartGateway(stack.gateways.indexOf(home));
    }
  });
});
