import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { SseClient, ask, waitFor, type ChatSession, type Stack } from '@traffic-dam/stack';
import { startE2eStack } from './e2e-stack';

/** td_http_refusals_total summed by code over the given gateways. */
async function refusalsByCode(urls: string[]): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const url of urls) {
    const text = await (await fetch(`${url}/metrics`)).text();
    for (const m of text.matchAll(/^td_http_refusals_total\{[^}]*code="([a-z_]+)"[^}]*\} (\d+)/gm)) {
      out[m[1] as string] = (out[m[1] as string] ?? 0) + Number(m[2]);
    }
  }
  return out;
}

describe('expected refusals are counted, not logged', () => {
  let stack: Stack;

  beforeAll(async () => {
    // At debug, where a request that went well has its line: a refusal has none even there (so none
    // at the default info either). 2 slots per gateway, so the dam fills up at once.
    stack = await startE2eStack({ env: { LOG_LEVEL: 'debug', DAM_SLOTS_PER_INSTANCE: '2' } });
  });

  afterAll(async () => {
    await stack?.stop();
  });

  it('writes no line (and no stack) for a refusal of any kind, at any level, and counts each by its code', async () => {
    const held = await Promise.all(Array.from({ length: 4 }, () => new SseClient(`${stack.url}/chat/stream`).open()));
    expect(held.map((h) => h.status)).toEqual([200, 200, 200, 200]);
    const [first, second] = (await Promise.all(held.map((h) => h.session()))) as [ChatSession, ChatSession];
    // Each request carries its own X-Request-Id (the gateway keeps the client's): the log line it
    // would get is found by it.
    const refused: Array<{ what: string; status: number; requestId: string }> = [];
    const send = async (what: string, path: string, init: { method?: string; headers?: Record<string, string>; body?: string } = {}) => {
      const requestId = `refusal-${what.replace(/ /g, '-')}-${Date.now()}`;
      const res = await fetch(`${stack.url}${path}`, { method: init.method ?? 'GET', body: init.body, headers: { ...init.headers, 'X-Request-Id': requestId } });
      await res.arrayBuffer();
      refused.push({ what, status: res.status, requestId });
    };
    const messages = `/chat/sessions/${first.sessionId}/messages`;
    const json = { 'Content-Type': 'application/json', Authorization: `Bearer ${first.token}` };
    const question = JSON.stringify({ question: 'q' });
    const stream = await new SseClient(`${stack.url}/chat/stream`, { headers: { 'X-Request-Id': 'refusal-dam_full' } }).open();
    refused.push({ what: 'dam_full', status: stream.status, requestId: 'refusal-dam_full' });
    await send('missing token', messages, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: question });
    await send('wrong token', messages, { method: 'POST', headers: { ...json, Authorization: 'Bearer wrong' }, body: question });
    await send('unknown session', '/chat/sessions/00000000-0000-4000-8000-000000000000/messages', { method: 'POST', headers: json, body: question });
    await send('bad json', messages, { method: 'POST', headers: json, body: '{"question":' });
    await send('not json', messages, { method: 'POST', headers: { ...json, 'Content-Type': 'text/plain' }, body: 'q' });
    await send('too large', messages, { method: 'POST', headers: json, body: JSON.stringify({ question: 'x'.repeat(5_000) }) });
    await send('unknown route', '/chat/nope');
    const accepted = await ask(stack.url, second, 'a real question');
    expect(accepted.status).toBe(202);
    await send('in flight', `/chat/sessions/${second.sessionId}/messages`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${second.token}` },
      body: question,
    });
    expect(refused.map((r) => `${r.what} ${r.status}`)).toEqual([
      'dam_full 429',
      'missing token 401',
      'wrong token 403',
      'unknown session 404',
      'bad json 400',
      'not json 415',
      'too large 413',
      'unknown route 404',
      'in flight 409',
    ]);
    await (held[1] as SseClient).waitFor((e) => e.event === 'done');

    // A request that is logged (at debug), after all of them: once it is in a log, so would they be.
    const del = await fetch(`${stack.url}/chat/sessions/${first.sessionId}`, { method: 'DELETE', headers: { Authorization: `Bearer ${first.token}` } });
    expect(del.status).toBe(204);
    const marker = del.headers.get('x-request-id');
    if (marker === null) throw new Error('no X-Request-Id on the DELETE');
    const files = readdirSync(stack.opts.dir).filter((f) => /^gateway\d+\.log$/.test(f));
    const lines = await waitFor('the DELETE in a gateway log', () => {
      const all = files.flatMap((f) => readFileSync(join(stack.opts.dir, f), 'utf8').split('\n'));
      return all.some((l) => l.includes(marker)) ? all : null;
    });

    for (const r of refused) expect({ what: r.what, lines: lines.filter((l) => l.includes(r.requestId)) }).toEqual({ what: r.what, lines: [] });
    expect(lines.filter((l) => l.includes('"stack"') || l.includes('failed with status code'))).toEqual([]);
    // Counted instead: by route and code, on whichever gateway answered.
    expect(await refusalsByCode(stack.gateways.map((g) => g.url))).toEqual({
      dam_full: 1,
      missing_token: 1,
      invalid_token: 1,
      session_not_found: 1,
      bad_json: 1,
      unsupported_media_type: 1,
      question_too_large: 1,
      not_found: 1,
      question_in_flight: 1,
    });
    for (const h of held) h.close();
  });
});
