import type { ControlChannel, ControlMessage } from '../sessions/control-channel';
import type { CloseReason, SessionConnection, SessionEvent } from '../sessions/session-events';

/**
 * On the session's instance: the connection of a client that resumed on another instance (the
 * edge). Events go to the edge over its control channel, those of one turn of the event loop in
 * one message; the edge writes them to the client. The session, its slot and its answers stay
 * here: the question's replies come to this instance's channel, fixed when it was asked.
 */
export class RemoteConnection implements SessionConnection {
  readonly transport = 'sse' as const;
  readonly resumable = true;
  gone = false;
  private queue: SessionEvent[] = [];
  private flushScheduled = false;
  private closed: ((reason: CloseReason) => void) | null = null;

  constructor(
    private readonly control: ControlChannel,
    private readonly me: string,
    readonly edge: string,
    readonly attachId: string,
    readonly sessionId: string,
    private readonly onGone: (c: RemoteConnection) => void,
  ) {}

  open(): void {
    this.publish({ type: 'attached', sessionId: this.sessionId, attachId: this.attachId, from: this.me, status: 'ok' });
  }

  send(event: SessionEvent): boolean {
    if (this.gone) return false;
    this.queue.push(event);
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(() => this.flush(false));
    }
    return true;
  }

  /** A keep-alive the edge waits for: without one for a while it takes this instance for dead. */
  ping(): void {
    if (!this.gone && this.queue.length === 0) this.flush(false);
  }

  end(): void {
    if (this.gone) return;
    this.flush(true);
    this.close('client');
  }

  onClose(cb: (reason: CloseReason) => void): void {
    if (this.gone) queueMicrotask(() => cb('client'));
    else this.closed = cb;
  }

  /** The edge says its client left. */
  detached(reason: CloseReason): void {
    this.close(reason);
  }

  private flush(end: boolean): void {
    this.flushScheduled = false;
    if (this.gone) return;
    const events = this.queue;
    this.queue = [];
    this.publish({ type: 'relay', sessionId: this.sessionId, attachId: this.attachId, from: this.me, events, ...(end ? { end } : {}) });
  }

  private publish(m: ControlMessage): void {
    // Nobody listening on the edge's channel: it is gone, and its client with it.
    void this.control.send(this.edge, m).then(
      (listeners) => {
        if (listeners === 0) this.close('client');
      },
      () => this.close('client'),
    );
  }

  private close(reason: CloseReason): void {
    if (this.gone) return;
    this.gone = true;
    this.queue = [];
    this.onGone(this);
    this.closed?.(reason);
  }
}
