import { createParser, type EventSourceMessage } from 'eventsource-parser';
import { SSE_PING, sseEvent } from './sse';

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
});
