/** One SSE event. Data is JSON on a single line, so no `data:` splitting is ever needed. */
export function sseEvent(event: string, data: unknown): string {
  return `event: ${event}\ndata: ${JSON.stringify(data)}\n\n`;
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
