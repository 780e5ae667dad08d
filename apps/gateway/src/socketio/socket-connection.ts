import type { Socket as NetSocket } from 'node:net';
import type { Socket } from 'socket.io';
import type { Admission } from '../dam/dam.service';
import type { LocalSession } from '../sessions/session-registry';
import type { CloseReason, SessionConnection, SessionEvent } from '../sessions/session-events';

/** The room of a session's socket, through which other instances reach it (via the Redis adapter). */
export const roomOf = (sessionId: string): string => `session:${sessionId}`;

/**
 * One Socket.IO connection of the /chat namespace as the session core sees it. It holds the dam's
 * admission from the handshake until the session takes it, and releases it itself if the client
 * leaves before: the slot comes back exactly once either way.
 *
 * Its TCP socket is corked from the first frame engine.io writes in a turn to the next tick, so
 * the frames of one turn (the tokens of a reply batch; those engine.io queued while the previous
 * write was under way) go out in one write, as the SSE adapter writes one chunk per turn.
 */
export class SocketConnection implements SessionConnection {
  readonly transport = 'socketio' as const;
  gone = false;
  /** The session, once it started (null: it could not). */
  started: Promise<LocalSession | null> = Promise.resolve(null);
  private admission: Admission | null = null;
  private endedHere = false;
  private reason: CloseReason = 'client';
  private closed: ((reason: CloseReason) => void) | null = null;
  private corked = false;

  constructor(private readonly socket: Socket) {
    // The upgraded HTTP request's socket is the WebSocket's (engine.io's transports: websocket).
    const raw = (socket.conn.request as { socket?: NetSocket } | undefined)?.socket;
    if (raw && typeof raw.cork === 'function') socket.conn.on('flush', () => this.corkForTurn(raw));
    // The engine's close comes even when the namespace never connected (a refused handshake).
    socket.conn.once('close', () => this.gone_());
    socket.once('disconnect', (why: string) => {
      // Disconnected by a server without this instance ending it: a DELETE from another instance, through the adapter.
      if (why === 'server namespace disconnect' && !this.endedHere) this.reason = 'deleted';
      this.gone_();
    });
  }

  static of(socket: Socket): SocketConnection | undefined {
    return (socket.data as { connection?: SocketConnection }).connection;
  }

  attach(): this {
    (this.socket.data as { connection?: SocketConnection }).connection = this;
    return this;
  }

  /** Keeps the handshake's admission until the session takes it. */
  hold(admission: Admission): void {
    if (this.gone) admission.lease.release();
    else this.admission = admission;
  }

  take(): Admission | null {
    const a = this.admission;
    this.admission = null;
    return a;
  }

  open(): void {
    // Nothing to start: the namespace is connected.
  }

  send(event: SessionEvent): boolean {
    if (this.gone || !this.socket.connected) return false;
    this.socket.emit(event.name, event.data);
    return true;
  }

  end(): void {
    this.endedHere = true;
    // Whole connection: one namespace per client. Buffered events (`expired`) go out first.
    this.socket.disconnect(true);
  }

  onClose(cb: (reason: CloseReason) => void): void {
    if (this.gone) queueMicrotask(() => cb(this.reason));
    else this.closed = cb;
  }

  private corkForTurn(raw: NetSocket): void {
    if (this.corked || raw.destroyed) return;
    this.corked = true;
    raw.cork();
    process.nextTick(() => {
      this.corked = false;
      raw.uncork();
    });
  }

  private gone_(): void {
    if (this.gone) return;
    this.gone = true;
    // Left before its session took the slot.
    this.admission?.lease.release();
    this.admission = null;
    this.closed?.(this.reason);
  }
}
