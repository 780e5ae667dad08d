import { Redis } from 'ioredis';
import { SseClient, ask, waitFor, type ChatSession, type Stack } from '@traffic-dam/stack';
import { E2E_ADMIN_TOKEN, metricValue, setFaults, startE2eStack } from './e2e-stack';

describe('the circuit breaker toward the worker, shared by both gateways', () => {
  let stack: Stack;
  const streams: SseClient[] = [];

  beforeAll(async () => {
    stack = await startE2eStack({
      env: {
        LOG_LEVEL: 'warn',
        DAM_BREAKER_MIN_VOLUME: '10',
        DAM_BREAKER_WINDOW_MS: '5000',
        DAM_BREAKER_OPEN_MS: '2000',
        WORKER_ADMIN_TOKEN: E2E_ADMIN_TOKEN,
      },
      workerEnv: () => ({ AI_TTFT_MS: '20', AI_TOKENS_PER_SEC: '200', AI_ANSWER_TOKENS: '3' }),
    });
  });

  afterAll(async () => {
    for (const s of streams) s.close();
    await stack?.stop();
  });

  it('opens on both gateways for a failing worker, refuses at once, and closes for all after one probe', async () => {
    const worker = stack.workers[0];
    if (!worker) throw new Error('no worker');
    const sessions: Array<{ sse: SseClient; s: ChatSession }> = [];
    for (let i = 0; i < 20; i++) {
      const sse = await new SseClient(`${stack.url}/chat/stream`).open();
      streams.push(sse);
      sessions.push({ sse, s: await sse.session() });
    }
    await setFaults(worker.url, { errorRatio: 1 });
    // Every answer now fails; ask until the gateways refuse.
    const t0 = Date.now();
    let firstRefusal = 0;
    let failedAnswers = 0;
    for (let round = 0; round < 20 && firstRefusal === 0; round++) {
      const results = await Promise.all(sessions.map(({ s }) => ask(stack.url, s, 'will this fail?')));
      if (results.some((r) => r.status === 503)) firstRefusal = Date.now();
      failedAnswers += results.filter((r) => r.status === 202).length;
      await Promise.all(
        sessions.map(({ sse }, k) =>
          results[k]?.status === 202
            ? sse.waitFor((e) => e.event === 'failed' && (e.data as { messageId: string }).messageId === (results[k]?.body as { messageId: string }).messageId)
            : null,
        ),
      );
    }
    expect(firstRefusal).toBeGreaterThan(0);
    await waitFor(
      'open on both gateways',
      async () => (await Promise.all(stack.gateways.map((g) => metricValue(g.url, 'td_breaker_state')))).every((v) => v === 2),
    );
    process.stdout.write(`breaker open on both gateways ${Date.now() - t0} ms after errors began\n`);

    // Open: refused on both gateways with Retry-After, without touching the queue (how fast:
    // loadtest/src/timings, a benchmark).
    const queue = new Redis(stack.redisUrl);
    try {
      const queued = await queue.xlen('td:questions');
      for (const [i, g] of stack.gateways.entries()) {
        const { s } = sessions[i] as { s: ChatSession };
        const r = await ask(g.url, s, 'still failing?');
        expect({ status: r.status, code: (r.body as { code?: string }).code }).toEqual({ status: 503, code: 'ai_unavailable' });
        expect(Number(r.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
      }
      expect(await queue.xlen('td:questions')).toBe(queued);
    } finally {
      queue.disconnect();
    }

    // Every failed answer is a dead letter with its reason.
    const dlq = new Redis(stack.redisUrl);
    let letters: Array<[string, string[]]> = [];
    await waitFor('dead-lettered', async () => {
      // Probe questions fail too while the worker does; they are the breaker's, not a client's.
      letters = ((await dlq.xrange('td:dlq', '-', '+')) as Array<[string, string[]]>).filter(([, f]) => f[f.indexOf('sessionId') + 1] !== 'breaker-probe');
      return letters.length >= failedAnswers;
    }).catch(() => undefined);
    dlq.disconnect();
    expect(letters.length).toBe(failedAnswers);
    // A question still queued when the breaker opened is dead-lettered by the sweeper instead.
    expect(letters.every(([, f]) => ['worker_error', 'breaker_open'].includes(f[f.indexOf('reason') + 1] as string))).toBe(true);

    // Heal the worker: after the open period one instance probes and the breaker closes for all.
    await setFaults(worker.url, { errorRatio: 0 });
    await waitFor(
      'closed on both gateways',
      async () => (await Promise.all(stack.gateways.map((g) => metricValue(g.url, 'td_breaker_state')))).every((v) => v === 0),
    );
    const goodProbes = await Promise.all(
      stack.gateways.map((g) => metricValue(g.url, 'td_breaker_probes_total{ok="true"').catch(() => 0)),
    );
    expect(goodProbes.reduce((a, n) => a + n, 0)).toBe(1);
    const { sse, s } = sessions[0] as { sse: SseClient; s: ChatSession };
    const r = await ask(stack.url, s, 'back?');
    expect(r.status).toBe(202);
    const end = await sse.waitFor((e) => (e.event === 'done' || e.event === 'failed') && (e.data as { messageId: string }).messageId === (r.body as { messageId: string }).messageId);
    expect(end.event).toBe('done');
  });
});
