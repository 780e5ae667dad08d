import { randomUUID } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { SseClient, ask, startTestRedis, waitFor, type ChatSession, type RedisHandle } from '@traffic-dam/stack';
import { startInstance, type TestInstance } from '../testing/instance';

/** A session id and token that no instance ever issued. */
const stranger = () => ({ sessionId: randomUUID(), token: 'x'.repeat(43) });

async function refusedByReason(i: TestInstance): Promise<Record<string, number>> {
  const text = await (await fetch(`${i.url}/metrics`)).text();
  const out: Record<string, number> = {};
  for (const m of text.matchAll(/^td_ai_refused_total\{reason="([a-z_]+)"[^}]*\} (\d+)/gm)) out[m[1] as string] = Number(m[2]);
  return out;
}

describe('the AI gate in the gateway (real Redis)', () => {
  let redis: RedisHandle;
  let g: TestInstance;

  beforeAll(async () => {
    redis = await startTestRedis(mkdtempSync(join(tmpdir(), 'td-gw-ai-gate-')));
    // One worker that declares 1 answer/s and never reads the queue: every question stays in line,
    // counted by its consumer group.
    const probe = new Redis(redis.url);
    await probe.xgroup('CREATE', 'td:questions', 'workers', '$', 'MKSTREAM');
    await probe.set('td:workers:w', JSON.stringify({ workerId: 'w', capacityPerSec: 1, throughputPerSec: 0, inFlight: 0, answering: 0, ts: Date.now() }), 'PX', 600_000);
    probe.disconnect();
    g = await startInstance(redis.url, 'ai-gate', { DAM_MAX_QUEUE_WAIT_MS: '1000' });
  });

  afterAll(async () => {
    await g?.app.close();
    await redis?.stop();
  });

  it('after a refusal that proves the line too long, refuses without looking the session up, until the line may have moved', async () => {
    const streams = await Promise.all(Array.from({ length: 3 }, () => new SseClient(`${g.url}/chat/stream`).open()));
    try {
      const [s1, s2, s3] = (await Promise.all(streams.map((s) => s.session()))) as [ChatSession, ChatSession, ChatSession];
      // At 1 answer/s and at most 1 s of wait: the line holds 2 (0 s and 1 s ahead of them).
      expect((await ask(g.url, s1, 'one')).status).toBe(202);
      expect((await ask(g.url, s2, 'two')).status).toBe(202);
      // The third would wait 2 s: refused by the gate in Redis, 1 s over the limit.
      const sentAt = Date.now();
      const third = await ask(g.url, s3, 'three');
      expect(third.status).toBe(503);
      expect((third.body as { code: string }).code).toBe('ai_overloaded');
      expect(await refusedByReason(g)).toEqual({ overloaded: 1 });

      // Within that second the line cannot have got under the limit: a question is refused before
      // its session is looked up (a session nobody issued would otherwise be 404).
      const early = await ask(g.url, stranger(), 'who am I?');
      expect(Date.now() - sentAt).toBeLessThan(1_000);
      expect(early.status).toBe(503);
      expect((early.body as { code: string }).code).toBe('ai_overloaded');
      expect(Number(early.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
      expect(await refusedByReason(g)).toEqual({ overloaded: 1, overloaded_known: 1 });

      // Once the proof has run out, the session is looked up again, and the gate is asked again.
      const late = await waitFor('the proof ran out: a stranger is looked up again', async () => {
        const r = await ask(g.url, stranger(), 'who am I?');
        return r.status === 503 ? null : r;
      });
      expect(late.status).toBe(404);
      expect((late.body as { code: string }).code).toBe('session_not_found');
      const again = await ask(g.url, s3, 'three, again');
      expect(again.status).toBe(503);
      expect((await refusedByReason(g))['overloaded']).toBe(2);
    } finally {
      for (const s of streams) s.close();
    }
  });
});
