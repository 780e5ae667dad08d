import http from 'node:http';

export interface TimedResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
  /** From the request being written to the last byte read, in ms. */
  ms: number;
}

/**
 * A lean keep-alive HTTP/1.1 client for latency checks. fetch() costs about a millisecond of its
 * own per request on a small machine, which would be measured as the server's.
 */
export class TimedHttp {
  private readonly agent = new http.Agent({ keepAlive: true, maxSockets: 4 });

  request(url: string, init: { method?: string; headers?: Record<string, string>; body?: string } = {}): Promise<TimedResponse> {
    const u = new URL(url);
    return new Promise((resolve, reject) => {
      const start = performance.now();
      const req = http.request(
        { host: u.hostname, port: u.port, path: `${u.pathname}${u.search}`, method: init.method ?? 'GET', headers: init.headers, agent: this.agent, timeout: 10_000 },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString(), ms: performance.now() - start }));
          res.on('error', reject);
        },
      );
      req.on('timeout', () => req.destroy(new Error(`timeout: ${url}`)));
      req.on('error', reject);
      req.end(init.body);
    });
  }

  close(): void {
    this.agent.destroy();
  }
}

export function percentile(values: number[], p: number): number {
  const s = [...values].sort((x, y) => x - y);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))] ?? NaN;
}
