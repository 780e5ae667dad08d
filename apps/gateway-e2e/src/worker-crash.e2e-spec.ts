import { Redis } from 'ioredis';
import { SseClient, ask, waitFor, type Stack } from '@traffic-dam/stack';
import { metricValue, startE2eStack } from './e2e-stack';

describe('the worker killed with questions in flight', () => {
  let stack: Stack;

  beforeAll(async () => {
    stack = await startE2eStack({
      env: { LOG_LEVEL: 'warn' },
      // About 2 s per answer, so 100 of them are in flight when the worker dies.
      workerEnv: () => ({ AI_TTFT_MS: '100', AI_TOKENS_PER_SEC: '10', AI_ANSWER_TOKENS: '20', AI_CAPACITY_PER_SEC: '200' }),
    });
  });

  afterAll(async () => {
    await stack?.stop();
  });

  it('SIGKILL then restart: every accepted question ends in done or error, tokens in order, none lost', async () => {
    const probe = new Redis(stack.redisUrl);
    const dlqBefore = await probe.xlen('td:dlq');
    const streams = await Promise.all(Array.from({ length: 100 }, () => new SseClient(`${stack.url}/chat/stream`).open()));
    try {
      const sessions = await Promise.all(streams.map((s) => s.session()));
      const posted = await Promise.all(sessions.map((s) => ask(stack.url, s, 'a question that will survive a crash')));
      const accepted = posted.flatMap((r, i) => (r.status === 202 ? [{ i, messageId: (r.body as { messageId: string }).messageId }] : []));
      expect(accepted.length).toBeGreaterThan(0);
      // Let the answers start, then kill the worker mid-answer and bring it back.
      await Promise.all(accepted.slice(0, 5).map(({ i }) => streams[i]?.waitFor((e) => e.event === 'token', 10_000)));
      const worker = stack.workers[0];
      if (!worker) throw new Error('no worker');
      worker.child.signal('SIGKILL');
      await worker.child.wait();
      await stack.restartWorker(0);

      const ends = await Promise.all(
        accepted.map(async ({ i, messageId }) => {
          const sse = streams[i] as SseClient;
          const end = await sse.waitFor(
            (e) => (e.event === 'done' || e.event === 'failed') && (e.data as { messageId: string }).messageId === messageId,
            40_000,
          );
          const seqs = sse.events.filter((e) => e.event === 'token').map((e) => (e.data as { seq: number }).seq);
          return { event: end.event, seqs };
        }),
      );
      const done = ends.filter((e) => e.event === 'done').length;
      const errored = ends.filter((e) => e.event === 'failed').length;
      process.stdout.write(`worker crash: ${accepted.length} accepted, ${done} done, ${errored} error\n`);
      expect(done + errored).toBe(accepted.length);
      // Their 30 s deadlines allow it, so the restarted worker answers every one of them.
      expect(done).toBe(accepted.length);
      // Re-answered questions do not repeat tokens the client already had.
      for (const e of ends) expect(e.seqs).toEqual(e.seqs.map((_, k) => k));
      // Errored = new dead letters, each with its reason (none errored here, so none).
      const letters = ((await probe.xrange('td:dlq', '-', '+')) as Array<[string, string[]]>).slice(dlqBefore);
      expect(letters).toHaveLength(errored);
    } finally {
      for (const s of streams) s.close();
      probe.disconnect();
    }
  });

  it('a worker that dies for good: the sweeper hands its questions to another worker, all answered', async () => {
    const requeuedSoFar = async (): Promise<number> =>
      (await Promise.all(stack.gateways.map((g) => metricValue(g.url, 'td_sweeper_questions_total{action="requeued"').catch(() => 0)))).reduce(
        (a, n) => a + n,
        0,
      );
    const requeuedBefore = await requeuedSoFar();
    // A slow restart above may have let the breaker open (no worker alive); start from closed.
    await waitFor(
      'breaker closed on both gateways',
      async () => (await Promise.all(stack.gateways.map((g) => metricValue(g.url, 'td_breaker_state')))).every((v) => v === 0),
    );
    const streams = await Promise.all(Array.from({ length: 50 }, () => new SseClient(`${stack.url}/chat/stream`).open()));
    try {
      const sessions = await Promise.all(streams.map((s) => s.session()));
      const posted = await Promise.all(sessions.map((s) => ask(stack.url, s, 'who will answer me?')));
      const accepted = posted.flatMap((r, i) => (r.status === 202 ? [{ i, messageId: (r.body as { messageId: string }).messageId }] : []));
      expect(accepted).toHaveLength(50);
      await Promise.all(accepted.slice(0, 5).map(({ i }) => streams[i]?.waitFor((e) => e.event === 'token', 10_000)));
      const dead = stack.workers[0];
      if (!dead) throw new Error('no worker');
      dead.child.signal('SIGKILL');
      await dead.child.wait();
      // Another worker, another consumer name: only the sweeper can give it the dead one's questions.
      stack.workers.push(await stack.startWorker(1));
      const ends = await Promise.all(
        accepted.map(async ({ i, messageId }) => {
          const e = await (streams[i] as SseClient).waitFor(
            (x) => (x.event === 'done' || x.event === 'failed') && (x.data as { messageId: string }).messageId === messageId,
            40_000,
          );
          return e.event;
        }),
      );
      const requeued =
        (await requeuedSoFar()) - requeuedBefore;
      process.stdout.write(`worker gone: ${accepted.length} accepted, ${ends.filter((e) => e === 'done').length} done, ${requeued} requeued by the sweeper\n`);
      expect(ends.every((e) => e === 'done')).toBe(true);
      expect(requeued).toBeGreaterThan(0);
    } finally {
      for (const s of streams) s.close();
    }
  });
});
