import { Redis } from 'ioredis';
import { SocketChatClient, SseClient, ask, waitFor, type GatewayHandle, type SseEvent, type Stack } from '@traffic-dam/stack';
import { metricValue, startE2eStack, watchReplies } from './e2e-stack';

interface DamView {
  held: number;
  global: { used: number; capacity: number; live: number } | null;
}

const dam = async (url: string): Promise<DamView> => (await (await fetch(`${url}/dam`, { signal: AbortSignal.timeout(2_000) })).json()) as DamView;
const messageIdOf = (e: SseEvent): string | undefined => (e.data as { messageId?: string }).messageId;

/** Outcomes by connected / refusal code ("connected", "dam_full", ...), so a miss shows what came instead. */
function outcomes(clients: SocketChatClient[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const c of clients) {
    const key = c.connected ? 'connected' : (c.refusal?.code ?? 'none');
    out[key] = (out[key] ?? 0) + 1;
  }
  return out;
}

function connectMany(url: string, n: number): Promise<SocketChatClient[]> {
  return Promise.all(Array.from({ length: n }, () => new SocketChatClient(url).connect(60_000)));
}

async function instanceOf(g: GatewayHandle): Promise<string> {
  return ((await (await fetch(`${g.url}/health/live`)).json()) as { instanceId: string }).instanceId;
}

describe('Socket.IO through nginx: 2 gateways with 1,000 slots each, one budget with SSE', () => {
  let stack: Stack;
  let open: Array<{ close(): void }> = [];

  beforeAll(async () => {
    stack = await startE2eStack({ env: { DAM_SLOTS_PER_INSTANCE: '1000', LOG_LEVEL: 'warn' } });
  });

  afterEach(async () => {
    for (const c of open) c.close();
    open = [];
    const running = stack.gateways.filter((g) => g.child.running);
    await waitFor('budget empty', async () => (await Promise.all(running.map((g) => dam(g.url)))).every((v) => v.held === 0), 20_000);
  });

  afterAll(async () => {
    await stack?.stop();
  });

  it('2,500 sockets at once: exactly 2,000 connected, 500 connect_error dam_full with a retry time; then 1,250 SSE + 1,250 sockets: 2,000 in all', async () => {
    const sockets = await connectMany(stack.url, 2_500);
    open.push(...sockets);
    expect(outcomes(sockets)).toEqual({ connected: 2_000, dam_full: 500 });
    const refused = sockets.filter((s) => !s.connected);
    expect(refused.every((s) => s.refusal?.status === 429 && (s.refusal.retryAfterMs ?? 0) >= 1_000)).toBe(true);
    await Promise.all(sockets.filter((s) => s.connected).map((s) => s.session(30_000)));
    const views = await Promise.all(stack.gateways.map((g) => dam(g.url)));
    expect(views.map((v) => v.held)).toEqual([1_000, 1_000]);
    // An instance's global view is as of its last word from Redis (an admit, or a beat that writes
    // a count decided on the local share when an admission missed its deadline): the next beat at the latest.
    await waitFor('the global view counts both instances', async () => {
      const g = (await dam(stack.url)).global;
      return g?.used === 2_000 && g.capacity === 2_000 && g.live === 2;
    });
    for (const g of stack.gateways) expect(await metricValue(g.url, 'td_sessions_open{transport="socketio"')).toBe(1_000);
    for (const s of sockets) s.close();
    await waitFor('budget empty', async () => (await dam(stack.url)).global?.used === 0, 20_000);

    const [sse, more] = await Promise.all([
      Promise.all(Array.from({ length: 1_250 }, () => new SseClient(`${stack.url}/chat/stream`).open(60_000))),
      connectMany(stack.url, 1_250),
    ]);
    open.push(...sse, ...more);
    const admitted = sse.filter((s) => s.status === 200).length + more.filter((s) => s.connected).length;
    const refusedCodes = [
      ...sse.filter((s) => s.status !== 200).map((s) => (s.refusal as { code?: string }).code),
      ...more.filter((s) => !s.connected).map((s) => s.refusal?.code),
    ];
    expect({ admitted, refused: refusedCodes.length }).toEqual({ admitted: 2_000, refused: 500 });
    expect(new Set(refusedCodes)).toEqual(new Set(['dam_full']));
  });

  it('SIGKILL one gateway with 1,000 sockets on it: its slots are back within 3 s, its clients reconnect to the survivor up to its budget', async () => {
    const [victim, survivor] = stack.gateways as [GatewayHandle, GatewayHandle];
    const onVictim = await connectMany(victim.url, 1_000);
    const onSurvivor = await connectMany(survivor.url, 300);
    open.push(...onVictim, ...onSurvivor);
    expect(outcomes(onVictim)).toEqual({ connected: 1_000 });
    expect(outcomes(onSurvivor)).toEqual({ connected: 300 });
    await waitFor('used 1,300', async () => (await dam(survivor.url)).global?.used === 1_300, 5_000);
    victim.child.signal('SIGKILL');
    try {
      await waitFor('the victim is out of the budget', async () => {
        const g = (await dam(survivor.url)).global;
        return g?.capacity === 1_000 && g.live === 1 && g.used === 300;
      }, 3_000);
      await waitFor("the victim's clients saw the disconnect", async () => onVictim.every((s) => s.closed), 10_000);
      // They come back through nginx, as clients do: a refused one again after its retryAfterMs.
      // The survivor takes what its budget has left, and no more.
      let back = await connectMany(stack.url, 1_000);
      open.push(...back);
      const refused = back.filter((c) => !c.connected);
      await new Promise((r) => setTimeout(r, Math.max(...refused.map((c) => c.refusal?.retryAfterMs ?? 1_000))));
      const again = await connectMany(stack.url, refused.length);
      open.push(...again);
      back = [...back.filter((c) => c.connected), ...again];
      const view = await dam(survivor.url);
      const dams = (await (await fetch(`${survivor.url}/metrics`)).text()).split('\n').filter((l) => /^td_dam_(refused_total|events_total)\{/.test(l));
      process.stdout.write(`after the reconnects: ${JSON.stringify(outcomes(back))}, survivor ${JSON.stringify(view)}\n${dams.join('\n')}\n`);
      expect(outcomes(back)).toEqual({ connected: 700, dam_full: 300 });
      expect(view.held).toBe(1_000);
    } finally {
      for (const s of open) s.close();
      await stack.restartGateway(stack.gateways.indexOf(victim));
      await waitFor('capacity back to 2,000', async () => (await dam(survivor.url)).global?.capacity === 2_000, 10_000);
    }
  });
});

describe('Socket.IO answers across 2 gateways, Redis and the Python worker', () => {
  let stack: Stack;

  beforeAll(async () => {
    stack = await startE2eStack({
      env: { LOG_LEVEL: 'warn', QUESTION_DEADLINE_MS: '8000', DAM_MAX_QUEUE_WAIT_MS: '10000' },
      workerEnv: () => ({ AI_TTFT_MS: '100', AI_TOKENS_PER_SEC: '20', AI_ANSWER_TOKENS: '20', AI_CAPACITY_PER_SEC: '400' }),
    });
  });

  afterAll(async () => {
    await stack?.stop();
  });

  it('answers in order on the socket; an answer to a question posted through the other gateway reaches it; DELETE there disconnects it', async () => {
    const c = await new SocketChatClient(stack.url).connect();
    try {
      const s = await c.session();
      const ack = await c.ask({ question: 'what is a dam?' });
      const { messageId } = ack as { messageId: string };
      await c.waitFor((e) => e.event === 'done' && messageIdOf(e) === messageId, 20_000);
      const seqs = c.events.filter((e) => e.event === 'token').map((e) => (e.data as { seq: number }).seq);
      expect(seqs).toEqual(Array.from({ length: 20 }, (_, k) => k));
      const ids = await Promise.all(stack.gateways.map(instanceOf));
      const other = stack.gateways[ids.findIndex((id) => id !== s.instanceId)] as GatewayHandle;
      const r = await ask(other.url, s, 'and through the other one?');
      expect(r.status).toBe(202);
      expect(r.headers.get('x-instance-id')).not.toBe(s.instanceId);
      const second = (r.body as { messageId: string }).messageId;
      const done = await c.waitFor((e) => e.event === 'done' && messageIdOf(e) === second, 20_000);
      expect(done.data).toMatchObject({ messageId: second, tokens: 20 });
      const del = await fetch(`${other.url}/chat/sessions/${s.sessionId}`, { method: 'DELETE', headers: { Authorization: `Bearer ${s.token}` } });
      expect(del.status).toBe(204);
      expect(await c.ended(5_000)).toBe(true);
      expect(c.disconnectReason).toBe('io server disconnect');
    } finally {
      c.close();
    }
  });

  it('a socket that disconnects mid-answer stops the worker within one token and frees its slot', async () => {
    const seen: Array<{ type: string; at: number }> = [];
    let messageId = '';
    const sub = await watchReplies(stack.redisUrl, (m) => {
      if (m.messageId === messageId) seen.push({ type: m.type, at: Date.now() });
    });
    const c = await new SocketChatClient(stack.url).connect();
    try {
      await c.session();
      messageId = ((await c.ask({ question: 'a long story, please' })) as { messageId: string }).messageId;
      await c.waitFor((e) => e.event === 'token' && (e.data as { seq: number }).seq >= 3, 10_000);
      const droppedAt = Date.now();
      c.close();
      // Long enough for many more tokens (20/s), had the worker not stopped.
      await new Promise((r) => setTimeout(r, 1_500));
      expect(seen.filter((m) => m.type === 'token' && m.at > droppedAt).length).toBeLessThanOrEqual(1);
      expect(seen.some((m) => m.type === 'done')).toBe(false);
      await waitFor('released', async () => (await Promise.all(stack.gateways.map((g) => dam(g.url)))).every((v) => v.held === 0), 5_000);
    } finally {
      c.close();
      sub.disconnect();
    }
  });

  it('the subscriber connections dropped while 200 socket questions are in flight: no gateway crash, every accepted one ends in done or error', async () => {
    const sockets = await Promise.all(Array.from({ length: 200 }, () => new SocketChatClient(stack.url).connect(30_000)));
    const admin = new Redis(stack.redisUrl);
    try {
      expect(outcomes(sockets)).toEqual({ connected: 200 });
      await Promise.all(sockets.map((s) => s.session(20_000)));
      const acks = await Promise.all(sockets.map((s, i) => s.ask({ question: `question ${i}: how does a dam hold?` }, 20_000)));
      const accepted = acks.flatMap((a, i) => ('messageId' in a ? [{ socket: sockets[i] as SocketChatClient, messageId: a.messageId }] : []));
      expect(accepted.length).toBeGreaterThan(100);
      // Answers are under way: drop every subscriber connection (the replies, the control channel, the adapter's), twice.
      await waitFor('answers under way', async () => accepted.filter((q) => q.socket.events.some((e) => e.event === 'token')).length >= 50, 10_000);
      const channels = (await Promise.all(stack.gateways.map(instanceOf))).map((id) => `td:replies:${id}`);
      for (let i = 0; i < 2; i++) {
        await admin.call('CLIENT', 'KILL', 'TYPE', 'pubsub');
        await waitFor('the gateways subscribed again', async () => {
          const counts = (await admin.call('PUBSUB', 'NUMSUB', ...channels)) as Array<string | number>;
          return counts.filter((_, k) => k % 2 === 1).every((n) => Number(n) >= 1);
        }, 10_000);
      }
      // Each accepted question ends on its socket: done, or an error (lost tokens, or no done by the deadline).
      const ends = await Promise.all(
        accepted.map((q) => q.socket.waitFor((e) => (e.event === 'done' || e.event === 'failed') && messageIdOf(e) === q.messageId, 30_000)),
      );
      const byEnd: Record<string, number> = {};
      for (const e of ends) {
        const key = e.event === 'done' ? 'done' : `error ${(e.data as { code: string }).code}`;
        byEnd[key] = (byEnd[key] ?? 0) + 1;
      }
      process.stdout.write(`subscribers dropped: ${accepted.length} accepted, ${JSON.stringify(byEnd)}\n`);
      expect(Object.values(byEnd).reduce((a, n) => a + n, 0)).toBe(accepted.length);
      // A done is a whole answer: every token, in order, once.
      for (const [k, e] of ends.entries()) {
        if (e.event !== 'done') continue;
        const q = accepted[k] as (typeof accepted)[number];
        const seqs = q.socket.events.filter((x) => x.event === 'token' && messageIdOf(x) === q.messageId).map((x) => (x.data as { seq: number }).seq);
        expect(seqs).toEqual(Array.from({ length: (e.data as { tokens: number }).tokens }, (_, j) => j));
      }
      expect(stack.gateways.every((g) => g.child.running)).toBe(true);
      // The gateways answer again: a fresh socket gets a whole answer.
      const after = await new SocketChatClient(stack.url).connect();
      try {
        await after.session();
        const a = (await after.ask({ question: 'still there?' })) as { messageId: string };
        expect((await after.waitFor((e) => (e.event === 'done' || e.event === 'failed') && messageIdOf(e) === a.messageId, 20_000)).event).toBe('done');
      } finally {
        after.close();
      }
    } finally {
      for (const s of sockets) s.close();
      admin.disconnect();
    }
  });
});
