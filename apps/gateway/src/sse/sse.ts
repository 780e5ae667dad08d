/** One SSE event. Data is JSON on a single line, so no `data:` splitting is ever needed. */
export function sseEvent(event: string, data: unknown, o: { id?: string; retryMs?: number } = {}): string {
  const head = `${o.id === undefined ? '' : `id: ${o.id}\n`}${o.retryMs === undefined ? '' : `retry: ${o.retryMs}\n`}`;
  return `${head}event: ${event}\ndata: ${JSON.stringify(data)}\n\n`;
}

/** A `retry:` line alone: sets how long EventSource waits before it reconnects after a drop. */
export function sseRetry(ms: number): string {
  return `retry: ${ms}\n\n`;
}

/** A comment line: keeps proxies and clients from timing out an idle stream. */
export const SSE_PING = ': ping\n\n';

export const SSE_HEADERS: Readonly<Record<string, string>> = {
  'Content-Type': 'text/event-stream; charset=utf-8',
  'Cache-Control': 'no-cache, no-transform',
  Connection: 'keep-alive',
  // Tells nginx not to buffer even if a config forgot proxy_buffering off.
  'X-Accel-Buffering': 'no',
};
