import { io, type Socket } from 'socket.io-client';
import type { ChatSession, SseEvent } from './sse-client';

/** A problem as the gateway sends it over Socket.IO (connect_error's data, or an ask's ack). */
export interface SocketProblem {
  code: string;
  status: number;
  title: string;
  detail: string;
  retryAfterMs?: number;
}

export type AskAck = { messageId: string } | SocketProblem;

/**
 * A client of the gateway's Socket.IO namespace /chat for tests and load: WebSocket only, no
 * reconnection of its own (a test decides when to come back), events recorded as SseClient does
 * so the same predicates fit both. Every wait here has a timeout.
 */
export class SocketChatClient {
  readonly events: SseEvent[] = [];
  /** Set once connected (true) or refused (the connect_error's problem). */
  connected = false;
  refusal: SocketProblem | undefined;
  closed = false;
  /** Why the server or the network ended it (Socket.IO's disconnect reason). */
  disconnectReason: string | undefined;
  readonly socket: Socket;
  private readonly started = Date.now();
  private waiters: Array<() => void> = [];

  /** wait: seconds the handshake offers to wait in the line (`auth.wait`) when the budget is full. */
  constructor(baseUrl: string, opts: { jwt?: string; wait?: number } = {}) {
    this.socket = io(`${baseUrl}/chat`, {
      transports: ['websocket'],
      reconnection: false,
      autoConnect: false,
      forceNew: true,
      timeout: 30_000,
      auth: { ...(opts.jwt ? { token: opts.jwt } : {}), ...(opts.wait !== undefined ? { wait: opts.wait } : {}) },
    });
    this.socket.onAny((event: string, data: unknown) => {
      this.events.push({ event, data, at: Date.now() - this.started });
      this.wake();
    });
    this.socket.on('disconnect', (reason) => {
      this.closed = true;
      this.disconnectReason = reason;
      this.wake();
    });
  }

  /** Connects; resolves once connected or refused (see `connected` and `refusal`), rejects on timeout. */
  connect(timeoutMs = 10_000): Promise<this> {
    return new Promise<this>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.socket.close();
        reject(new Error(`socket connect timed out after ${timeoutMs} ms`));
      }, timeoutMs);
      this.socket.once('connect', () => {
        clearTimeout(timer);
        this.connected = true;
        resolve(this);
      });
      this.socket.once('connect_error', (err: Error & { data?: SocketProblem }) => {
        clearTimeout(timer);
        this.refusal = err.data ?? { code: 'transport_error', status: 0, title: err.message, detail: err.message };
        this.closed = true;
        resolve(this);
      });
      this.socket.connect();
    });
  }

  /** Waits until pred matches an event (from index `from`), or the socket closed, or timeout. */
  async waitFor(pred: (e: SseEvent) => boolean, timeoutMs = 10_000, from = 0): Promise<SseEvent> {
    const until = Date.now() + timeoutMs;
    for (;;) {
      const hit = this.events.slice(from).find(pred);
      if (hit) return hit;
      if (this.closed) throw new Error(`socket closed before the event arrived (${this.describe()})`);
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

  async session(timeoutMs = 10_000): Promise<ChatSession> {
    return (await this.waitFor((e) => e.event === 'session', timeoutMs)).data as ChatSession;
  }

  /** Emits `ask` and resolves with its acknowledgement: {messageId} or a problem. */
  ask(question: unknown, timeoutMs = 10_000): Promise<AskAck> {
    return this.socket.timeout(timeoutMs).emitWithAck('ask', question) as Promise<AskAck>;
  }

  /** Waits until the server ended the socket; true if it did within the timeout. */
  async ended(timeoutMs = 10_000): Promise<boolean> {
    const until = Date.now() + timeoutMs;
    while (!this.closed) {
      const left = until - Date.now();
      if (left <= 0) return false;
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
    return true;
  }

  close(): void {
    this.socket.close();
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  private describe(): string {
    return `socket ${this.socket.id ?? '-'}: ${this.events.length} events: ${this.events.map((e) => e.event).join(',')}`;
  }
}
