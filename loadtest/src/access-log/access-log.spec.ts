import { bySecond, parseAccessLine } from './access-log';

const line = (req: string, status: number, rt: string, uht: string, end: string): string =>
  `127.0.0.1 "${req} HTTP/1.1" ${status} 120 rt=${rt} up=127.0.0.1:4000 ust=${status} uct=0.000 uht=${uht} end=${end} rid=abc`;

describe('nginx access log (format main)', () => {
  it('reads kind, status, start, total and the time to the gateway headers', () => {
    const e = parseAccessLine(line('POST /chat/sessions/4a5f9/messages', 503, '3.030', '3.027', '1795736191.891'));
    expect(e).toEqual({ kind: 'question', method: 'POST', status: 503, startMs: 1795736188861, totalMs: 3030, headersMs: 3027 });
    expect(parseAccessLine(line('GET /chat/stream', 200, '12.500', '0.004', '1795736200.000'))?.kind).toBe('stream');
    expect(parseAccessLine(line('GET /dam', 200, '0.001', '0.001', '1795736200.000'))?.kind).toBe('other');
  });

  it('takes the last upstream of a retried request, and null when none answered', () => {
    expect(parseAccessLine(line('GET /chat/stream', 200, '0.030', '0.004, 0.020', '1795736200.000'))?.headersMs).toBe(20);
    expect(parseAccessLine(line('GET /chat/stream', 502, '0.001', '-', '1795736200.000'))?.headersMs).toBeNull();
  });

  it('ignores lines of another format', () => {
    expect(parseAccessLine('127.0.0.1 - - [26/Nov/2026:23:00:00 +0000] "GET / HTTP/1.1" 200 0')).toBeNull();
  });

  it('groups by second of arrival and kind, with quantiles of the time to headers', () => {
    const entries = [
      parseAccessLine(line('GET /chat/stream', 200, '9.000', '0.010', '1010.000')), // starts at 1001
      parseAccessLine(line('GET /chat/stream', 429, '0.030', '0.030', '1001.530')), // 1001.5
      parseAccessLine(line('POST /chat/sessions/a/messages', 503, '3.000', '3.000', '1005.200')), // 1002.2
      parseAccessLine(line('POST /chat/sessions/b/messages', 202, '0.005', '0.005', '1002.805')), // 1002.8
      parseAccessLine(line('GET /metrics', 200, '0.001', '0.001', '1002.000')),
    ].filter((e) => e !== null);
    expect(bySecond(entries)).toEqual([
      { second: 0, kind: 'stream', count: 2, statuses: { 200: 1, 429: 1 }, headersP50: 10, headersP99: 30, headersMax: 30 },
      { second: 1, kind: 'question', count: 2, statuses: { 202: 1, 503: 1 }, headersP50: 5, headersP99: 3000, headersMax: 3000 },
    ]);
    // From a given start (a scenario's): earlier requests are left out, seconds count from it.
    expect(bySecond(entries, 1_002_000).map((r) => [r.second, r.kind, r.count])).toEqual([[0, 'question', 2]]);
  });
});
