import { createParser, type EventSourceMessage } from 'eventsource-parser';
import { SSE_PING, sseEvent, sseRetry } from './sse';

describe('sseEvent', () => {
  it('is read back by a standard SSE parser, even with newlines in the text', () => {
    const got: EventSourceMessage[] = [];
    const parser = createParser({ onEvent: (e) => got.push(e) });
    parser.feed(sseEvent('token', { seq: 0, text: 'line one\nline two' }));
    parser.feed(SSE_PING);
    parser.feed(sseEvent('done', { tokens: 1 }));
    expect(got.map((e) => e.event)).toEqual(['token', 'done']);
    expect(JSON.parse(got[0]!.data)).toEqual({ seq: 0, text: 'line one\nline two' });
  });

  it('carries an id and a retry when given', () => {
    const got: EventSourceMessage[] = [];
    const retries: number[] = [];
    const parser = createParser({ onEvent: (e) => got.push(e), onRetry: (ms) => retries.push(ms) });
    parser.feed(sseRetry(1000));
    parser.feed(sseEvent('expired', { reason: 'draining' }, { id: 'h.7', retryMs: 400 }));
    expect(got.map((e) => [e.event, e.id])).toEqual([['expired', 'h.7']]);
    expect(retries).toEqual([1000, 400]);
  });
});
