import type { Socket as NetSocket } from 'node:net';
import type { Socket } from 'socket.io';
import { afterIo } from '../common/after-io';
import { toSocketProblem } from '../common/errors';
import type { Admission } from '../dam/dam.service';
import type { LocalSession } from '../sessions/session-registry';
import type { CloseReason, LineEventData, SessionEvent, WaitingConnection } from '../sessions/session-events';

type Next = (err?: Error) => void;

/** The room of a session's socket, through which other instances reach it (via the Redis adapter). */
export const roomOf = (sessionId: string): string => `session:${sessionId}`;

/**
 * One Socket.IO connection of the /chat namespace as the session core sees it. It holds the dam's
 * admission from the handshake until the session takes it, and releases it itself if the client
 * leaves before: the slot comes back exactly once either way. A handshake that offered to wait
 * and met a full budget connects the namespace at once to hear `queued`; its session starts when
 * the line hands it a slot, or it hears `refused` and is disconnected.
 *
 * Its TCP socket is corked from the first frame engine.io writes in a turn to the next tick, so
 * the frames of one turn (the tokens of a reply batch; those engine.io queued while the previous
 * write was under way) go out in one write, as the SSE adapter writes one chunk per turn.
 */
export class SocketConnection implements WaitingConnection {
  readonly transport = 'socketio' as const;
  gone = false;
  /** The session, once it started (null: it could not). */
  started: Promise<LocalSession | null> = Promise.resolve(null);
  /** The wait the handshake offered, in ms: the socket's questions may wait as long in the AI queue. */
  waitMs = 0;
  private admission: Admission | null = null;
  private admitted: ((a: Admission) => void) | null = null;
  /** The namespace middleware's next(), until the connection is let in or refused. */
  private next: Next | null = null;
  /** The last line event, held until the namespace is connected. */
  private pending: LineEventData['queued'] | null = null;
  private isConnected = false;
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

  /** The middleware's next(): called once, by the admission, a refusal or the first line event. */
  connectWith(next: Next): void {
    this.next = next;
  }

  /** Keeps the handshake's admission until the session takes it, and lets the connection in. */
  hold(admission: Admission): void {
    if (this.gone) {
      admission.lease.release();
      return;
    }
    if (this.admitted) this.admitted(admission);
    else this.admission = admission;
    this.letIn();
  }

  /** Refused: a connect_error before the namespace connected, else `refused` and the end. */
  refuse(err: unknown): void {
    const next = this.next;
    this.next = null;
    if (next) {
      const problem = toSocketProblem(err);
      next(Object.assign(new Error(problem.detail), { data: problem }));
      return;
    }
    if (this.gone) return;
    this.socket.emit('refused', toSocketProblem(err));
    this.end();
  }

  /** The namespace connected (handleConnection): line events held until now go out. */
  connected(): void {
    this.isConnected = true;
    if (this.pending) this.socket.emit('queued', this.pending);
    this.pending = null;
  }

  /** Runs cb with the admission, now or once the line hands it a slot. */
  whenAdmitted(cb: (a: Admission) => void): void {
    const a = this.take();
    if (a) cb(a);
    else this.admitted = cb;
  }

  private letIn(): void {
    const next = this.next;
    this.next = null;
    next?.();
  }

  take(): Admission | null {
    const a = this.admission;
    this.admission = null;
    return a;
  }

  open(): void {
    // Nothing to start: the namespace is connected.
  }

  notify<N extends keyof LineEventData>(_name: N, data: LineEventData[N]): boolean {
    if (this.gone) return false;
    if (!this.isConnected) {
      this.pending = data;
      this.letIn();
      return true;
    }
    this.socket.emit('queued', data);
    return true;
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
    afterIo(() => {
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
