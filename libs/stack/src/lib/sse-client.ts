import { createParser } from 'eventsource-parser';
import { WAIT_DEFAULT_MS } from './wait';

export interface SseEvent {
  event: string;
  data: unknown;
  /** The event's `id:` (`<resume handle>.<n>` from the gateway), if it had one. */
  id?: string;
  /** ms since the stream was requested. */
  at: number;
}

export interface ChatSession {
  sessionId: string;
  token: string;
  instanceId: string;
  expiresAt: number;
}

/**
 * A client of GET /chat/stream for tests and load: parses events as they arrive and lets the
 * caller wait for one with a deadline (by default the workspace's generous one, WAIT_DEFAULT_MS).
 */
export class SseClient {
  readonly events: SseEvent[] = [];
  status = 0;
  headers = new Headers();
  /** Body of a refused (non-200) request. */
  refusal: unknown;
  closed = false;
  /** `: ping` comment lines seen. */
  pings = 0;
  /** The last `retry:` the server sent (ms), or null. */
  retry: number | null = null;
  private readonly abort = new AbortController();
  private readonly started = Date.now();
  private waiters: Array<() => void> = [];
  private done: Promise<void> = Promise.resolve();

  constructor(readonly url: string, private readonly init: { headers?: Record<string, string> } = {}) {}

  /** Resolves when the response head arrived (status known). */
  async open(timeoutMs = 10_000): Promise<this> {
    const timer = setTimeout(() => this.abort.abort(new Error('open timeout')), timeoutMs);
    try {
      const res = await fetch(this.url, { headers: { Accept: 'text/event-stream', ...this.init.headers }, signal: this.abort.signal });
      this.status = res.status;
      this.headers = res.headers;
      if (res.status !== 200 || !res.body) {
        const text = await res.text();
        try {
          this.refusal = JSON.parse(text);
        } catch {
          this.refusal = text;
        }
        this.closed = true;
        return this;
      }
      this.done = this.pump(res.body);
      return this;
    } finally {
      clearTimeout(timer);
    }
  }

  private async pump(body: ReadableStream<Uint8Array>): Promise<void> {
    const parser = createParser({
      onEvent: (e) => {
        let data: unknown = e.data;
        try {
          data = JSON.parse(e.data);
        } catch {
          // keep the raw text
        }
        this.events.push({ event: e.event ?? 'message', data, id: e.id, at: Date.now() - this.started });
        this.wake();
      },
      onRetry: (ms) => {
        this.retry = ms;
      },
      onComment: (c) => {
        if (c.trim() === 'ping') this.pings++;
      },
    });
    const decoder = new TextDecoder();
    try {
      for await (const chunk of body as unknown as AsyncIterable<Uint8Array>) parser.feed(decoder.decode(chunk, { stream: true }));
    } catch {
      // aborted or reset: the stream is over either way
    } finally {
      this.closed = true;
      this.wake();
    }
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  /** Waits until pred matches an event (from index `from`), or the stream closed, or timeout. */
  async waitFor(pred: (e: SseEvent) => boolean, timeoutMs = WAIT_DEFAULT_MS, from = 0): Promise<SseEvent> {
    const until = Date.now() + timeoutMs;
    for (;;) {
      const hit = this.events.slice(from).find(pred);
      if (hit) return hit;
      if (this.closed) throw new Error(`stream closed before the event arrived (${this.describe()})`);
      const left = until - Date.now();
      if (left <= 0) throw new Error(`timed out after ${timeoutMs} ms waiting for an event (${this.describe()})`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  /** The id of the last event that had one: what an EventSource sends back as Last-Event-ID. */
  get lastEventId(): string | undefined {
    for (let i = this.events.length - 1; i >= 0; i--) if (this.events[i]?.id !== undefined) return this.events[i]?.id;
    return undefined;
  }

  async session(timeoutMs = WAIT_DEFAULT_MS): Promise<ChatSession> {
    const e = await this.waitFor((x) => x.event === 'session', timeoutMs);
    return e.data as ChatSession;
  }

  /** Waits for the stream to end (server side); true if it ended within the timeout. */
  async ended(timeoutMs = WAIT_DEFAULT_MS): Promise<boolean> {
    if (this.closed) return true;
    const t = new Promise<false>((r) => setTimeout(r, timeoutMs, false).unref());
    return Promise.race([this.done.then(() => true as const), t]);
  }

  close(): void {
    this.abort.abort();
  }

  private describe(): string {
    return `${this.url} status ${this.status}, ${this.events.length} events: ${this.events.map((e) => e.event).join(',')}`;
  }
}

export interface AskResult {
  status: number;
  body: unknown;
  headers: Headers;
}

/** POST a question with the session's token. */
export async function ask(baseUrl: string, s: Pick<ChatSession, 'sessionId' | 'token'>, question: string, timeoutMs = 10_000): Promise<AskResult> {
  const res = await fetch(`${baseUrl}/chat/sessions/${s.sessionId}/messages`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${s.token}` },
    body: JSON.stringify({ question }),
    signal: AbortSignal.timeout(timeoutMs),
  });
  const text = await res.text();
  let body: unknown = text;
  try {
    body = JSON.parse(text);
  } catch {
    // not JSON
  }
  return { status: res.status, body, headers: res.headers };
}
