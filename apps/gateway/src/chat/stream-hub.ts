import type { Response } from 'express';
import type { Lease } from '@traffic-dam/dam';
import type { NewSession } from './session.repository';
import { SSE_PING, sseEvent } from './sse';

/** Bytes a client may leave unread before it counts as stuck and is cut off. */
const MAX_UNREAD_BYTES = 512 * 1024;

export type CloseReason = 'client' | 'deleted' | 'draining' | 'slow_client' | 'error' | 'idle' | 'lifetime';

export interface LocalStream {
  readonly sessionId: string;
  readonly res: Response;
  readonly openedAt: number;
  /** The dam's hold for this stream; released exactly once, when the stream ends. */
  readonly lease: Lease;
  readonly session: NewSession;
  /** False while the session record could not be written to Redis (Redis away). */
  persisted: boolean;
  /** Last time a question or its answer went through this session (ms). */
  lastActivity: number;
  /** The question in flight on this session, wherever it was posted, and its deadline. */
  inflight?: { messageId: string; deadline: number; acceptedAt: number; lastSeq: number; answer?: { unsubscribe(): void } };
  /** The last question that ended here (done, error or lost): late replies to it are dropped. */
  lastEnded?: string;
  /** Set once the stream ended, with why. */
  closeReason?: CloseReason;
}

/**
 * The SSE streams this instance holds. One timer pings them all: no timer per session, so
 * 1,000 idle streams cost one wake-up per interval.
 */
export class StreamHub {
  private readonly streams = new Map<string, LocalStream>();
  private readonly timer: NodeJS.Timeout;

  constructor(pingMs: number) {
    this.timer = setInterval(() => this.pingAll(), pingMs);
    this.timer.unref();
  }

  get size(): number {
    return this.streams.size;
  }

  add(session: NewSession, res: Response, lease: Lease, persisted: boolean): LocalStream {
    const now = Date.now();
    const s: LocalStream = { sessionId: session.sessionId, res, openedAt: now, lease, session, persisted, lastActivity: now };
    this.streams.set(session.sessionId, s);
    return s;
  }

  unpersisted(): LocalStream[] {
    return [...this.streams.values()].filter((s) => !s.persisted);
  }

  get(sessionId: string): LocalStream | undefined {
    return this.streams.get(sessionId);
  }

  has(sessionId: string): boolean {
    return this.streams.has(sessionId);
  }

  /** Writes one event; false when the session is not here or the stream is gone. */
  send(sessionId: string, event: string, data: unknown): boolean {
    const s = this.streams.get(sessionId);
    if (!s) return false;
    return this.write(s, sseEvent(event, data));
  }

  /** Ends a stream from the server side. The response's close handler does the clean-up. */
  end(sessionId: string, reason: CloseReason, finalEvent?: { event: string; data: unknown }): boolean {
    const s = this.streams.get(sessionId);
    if (!s) return false;
    s.closeReason ??= reason;
    if (finalEvent && !s.res.writableEnded) s.res.write(sseEvent(finalEvent.event, finalEvent.data));
    s.res.end();
    return true;
  }

  /** Forgets a stream; returns it once, so clean-up runs exactly once per stream. */
  remove(sessionId: string): LocalStream | undefined {
    const s = this.streams.get(sessionId);
    if (s) this.streams.delete(sessionId);
    return s;
  }

  ids(): string[] {
    return [...this.streams.keys()];
  }

  /** Marks the session busy now (a question or an answer passed), for the idle timeout. */
  touch(sessionId: string): void {
    const s = this.streams.get(sessionId);
    if (s) s.lastActivity = Date.now();
  }

  /**
   * Ends every stream past its lifetime or idle for idleMs, with `event: expired`. Runs from one
   * timer for all streams; returns how many it ended.
   */
  expire(now: number, idleMs: number): number {
    let n = 0;
    for (const s of this.streams.values()) {
      const reason = now >= s.session.expiresAt ? 'lifetime' : now - s.lastActivity >= idleMs ? 'idle' : null;
      if (reason === null || s.closeReason) continue;
      this.end(s.sessionId, reason, { event: 'expired', data: { reason } });
      n++;
    }
    return n;
  }

  stop(): void {
    clearInterval(this.timer);
  }

  private write(s: LocalStream, chunk: string): boolean {
    if (s.res.writableEnded || s.res.destroyed) return false;
    if (s.res.writableLength > MAX_UNREAD_BYTES) {
      s.closeReason ??= 'slow_client';
      s.res.destroy();
      return false;
    }
    s.res.write(chunk);
    return true;
  }

  private pingAll(): void {
    for (const s of this.streams.values()) this.write(s, SSE_PING);
  }
}
