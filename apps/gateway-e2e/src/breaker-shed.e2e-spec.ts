import { Redis } from 'ioredis';
import { SseClient, ask, waitFor, type Stack } from '@traffic-dam/stack';
import { E2E_ADMIN_TOKEN, metricValue, setFaults, startE2eStack } from './e2e-stack';

describe('the breaker opens while questions wait in the queue', () => {
  let stack: Stack;
  const streams: SseClient[] = [];

  beforeAll(async () => {
    stack = await startE2eStack({
      env: {
        LOG_LEVEL: 'warn',
        // Two failures open it, and it stays open for the whole test.
        DAM_BREAKER_MIN_VOLUME: '2',
        DAM_BREAKER_OPEN_MS: '60000',
        DAM_MAX_QUEUE_WAIT_MS: '60000',
        AI_SWEEP_MS: '200',
        WORKER_ADMIN_TOKEN: E2E_ADMIN_TOKEN,
      },
      // Two at a time, a second each: the rest of the questions wait in the queue.
      workerEnv: () => ({ WORKER_CONCURRENCY: '2', AI_TTFT_MS: '1000', AI_TOKENS_PER_SEC: '50', AI_ANSWER_TOKENS: '5' }),
    });
  });

  afterAll(async () => {
    for (const s of streams) s.close();
    await stack?.stop();
  });

  it('dead-letters the queued questions as breaker_open and tells their clients at once; none is lost', async () => {
    const worker = stack.workers[0];
    if (!worker) throw new Error('no worker');
    await setFaults(worker.url, { errorRatio: 1 });
    const probe = new Redis(stack.redisUrl);
    const dlqBefore = await probe.xlen('td:dlq');
    for (let i = 0; i < 30; i++) streams.push(await new SseClient(`${stack.url}/chat/stream`).open());
    const sessions = await Promise.all(streams.map((s) => s.session()));
    const posted = await Promise.all(sessions.map((s) => ask(stack.url, s, 'will it wait?')));
    const accepted = posted.flatMap((r, i) => (r.status === 202 ? [{ i, messageId: (r.body as { messageId: string }).messageId }] : []));
    expect(accepted).toHaveLength(30);

    const started = Date.now();
    const ends = await Promise.all(
      accepted.map(async ({ i, messageId }) => {
        const e = await (streams[i] as SseClient).waitFor(
          (ev) => (ev.event === 'done' || ev.event === 'failed') && (ev.data as { messageId: string }).messageId === messageId,
          15_000,
        );
        return { event: e.event, code: (e.data as { code?: string }).code, at: Date.now() - started };
      }),
    );
    const shedToClients = ends.filter((e) => e.code === 'ai_unavailable');
    const failed = ends.filter((e) => e.code === 'worker_error');
    process.stdout.write(
      `breaker shed: ${shedToClients.length} told ai_unavailable (last after ${Math.max(...shedToClients.map((e) => e.at))} ms), ${failed.length} worker_error\n`,
    );
    // Every accepted question ended, as a failure the client heard about.
    expect(shedToClients.length + failed.length).toBe(30);
    // The worker started a few before the breaker opened; the rest never waited for it: shed by
    // the sweeper (ai_unavailable), not run into their 30 s deadline (deadline_exceeded).
    expect(shedToClients.length).toBeGreaterThanOrEqual(20);

    // Errored = new dead letters, each with its reason; nothing silently dropped.
    let letters: Array<Record<string, string>> = [];
    await waitFor('30 new dead letters', async () => {
      const raw = ((await probe.xrange('td:dlq', '-', '+')) as Array<[string, string[]]>).slice(dlqBefore);
      letters = raw
        .map(([, flat]) => Object.fromEntries(Array.from({ length: flat.length / 2 }, (_, k) => [flat[2 * k], flat[2 * k + 1]])))
        .filter((f) => f['sessionId'] !== 'breaker-probe');
      return letters.length >= 30;
    }).catch(() => undefined);
    probe.disconnect();
    const ids = new Set(accepted.map((a) => a.messageId));
    expect(letters.every((l) => ids.has(l['id'] as string))).toBe(true);
    expect(letters.filter((l) => l['reason'] === 'breaker_open')).toHaveLength(shedToClients.length);
    expect(letters.filter((l) => l['reason'] === 'worker_error')).toHaveLength(failed.length);
    const shedCounted = await Promise.all(stack.gateways.map((g) => metricValue(g.url, 'td_sweeper_questions_total{action="breaker_shed"').catch(() => 0)));
    expect(shedCounted.reduce((a, n) => a + n, 0)).toBe(shedToClients.length);
  });
});
