import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createParser, type EventSourceMessage } from 'eventsource-parser';
import { SseClient, startTestRedis, type RedisHandle } from '@traffic-dam/stack';
import { startInstance, type TestInstance } from '../testing/instance';

/** A whole (ended) SSE response: its status, the `retry:` it set, its events with their ids. */
async function readStream(url: string): Promise<{ status: number; retry: number | null; events: EventSourceMessage[]; retryAfter: string | null }> {
  const res = await fetch(url, { headers: { Accept: 'text/event-stream' }, signal: AbortSignal.timeout(5_000) });
  const events: EventSourceMessage[] = [];
  let retry: number | null = null;
  const parser = createParser({ onEvent: (e) => events.push(e), onRetry: (ms) => (retry = ms) });
  parser.feed(await res.text());
  return { status: res.status, retry, events, retryAfter: res.headers.get('retry-after') };
}

describe('refusals an EventSource can read: GET /chat/stream?refusal=event (real Redis)', () => {
  let redis: RedisHandle;
  let gw: TestInstance;
  let holder: SseClient;

  beforeAll(async () => {
    redis = await startTestRedis(mkdtempSync(join(tmpdir(), 'td-refused-')));
    gw = await startInstance(redis.url, 'refused', { DAM_SLOTS_PER_INSTANCE: '1' });
    // The one slot is taken: every other stream is refused with dam_full.
    holder = await new SseClient(`${gw.url}/chat/stream`).open();
    await holder.session();
  });

  afterAll(async () => {
    holder?.close();
    await gw?.app.close();
    await redis?.stop();
  });

  it('opens, sends one `refused` event with the problem and retryAfterMs, sets retry: to the Retry-After, and ends', async () => {
    const r = await readStream(`${gw.url}/chat/stream?refusal=event`);
    expect(r.status).toBe(200);
    expect(r.events.map((e) => e.event)).toEqual(['refused']);
    const p = JSON.parse(r.events[0]?.data ?? '{}') as { code: string; status: number; title: string; detail: string; retryAfterMs: number };
    expect(p).toMatchObject({ code: 'dam_full', status: 429, type: 'https://traffic-dam.dev/problems/dam_full' });
    expect(p.detail.length).toBeGreaterThan(0);
    expect(p.retryAfterMs).toBe(Number(r.retryAfter) * 1_000);
    expect(r.retry).toBe(p.retryAfterMs);
    // No id: a retry after the wait is a fresh attempt.
    expect(r.events[0]?.id).toBeUndefined();
  });

  it('gives a refusal that waiting does not fix `id: end`; the reconnect with it gets 204, which stops EventSource', async () => {
    const r = await readStream(`${gw.url}/chat/stream?refusal=event&ticket=used-or-unknown`);
    expect(r.events.map((e) => [e.event, e.id])).toEqual([['refused', 'end']]);
    expect(JSON.parse(r.events[0]?.data ?? '{}')).toMatchObject({ code: 'invalid_ticket', status: 401 });
    const again = await fetch(`${gw.url}/chat/stream?refusal=event&ticket=used-or-unknown`, { headers: { 'Last-Event-ID': 'end' } });
    expect(again.status).toBe(204);
  });

  it('leaves clients that did not ask with the HTTP refusal they get today', async () => {
    const plain = await new SseClient(`${gw.url}/chat/stream`).open();
    expect(plain.status).toBe(429);
    expect(plain.refusal).toMatchObject({ code: 'dam_full' });
  });
});
