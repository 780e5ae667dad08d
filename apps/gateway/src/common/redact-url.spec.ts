import { redactUrl } from './redact-url';

describe('redactUrl', () => {
  it('replaces the value of every ticket parameter, whatever its spelling', () => {
    expect(redactUrl('/chat/stream?refusal=event&ticket=abc_DEF-123')).toBe('/chat/stream?refusal=event&ticket=[redacted]');
    expect(redactUrl('/chat/stream?TICKET=a&ticket=b')).toBe('/chat/stream?TICKET=[redacted]&ticket=[redacted]');
    expect(redactUrl('/chat/stream?tick%65t=secret')).toBe('/chat/stream?tick%65t=[redacted]');
    expect(redactUrl('/chat/stream?ticket')).toBe('/chat/stream?ticket=[redacted]');
  });

  it('drops a query it cannot decode, and leaves every other URL as it is', () => {
    expect(redactUrl('/chat/stream?%E0%A4%A=x&ticket=s')).toBe('/chat/stream?[redacted]');
    expect(redactUrl('/chat/stream?refusal=event')).toBe('/chat/stream?refusal=event');
    expect(redactUrl('/chat/sessions/1/messages')).toBe('/chat/sessions/1/messages');
  });
});
