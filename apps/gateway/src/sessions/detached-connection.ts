import type { CloseReason, SessionConnection, SessionEvent, Transport } from './session-events';

/**
 * The place of a session's connection while its client is away (a dropped SSE stream within its
 * resume window): events go only to the session's ring, and ending it ends the session.
 */
export class DetachedConnection implements SessionConnection {
  readonly gone = true;
  readonly resumable = true;
  private closed: ((reason: CloseReason) => void) | null = null;
  private ended = false;

  constructor(readonly transport: Transport) {}

  open(): void {
    // Never opened: a resume puts a real connection in its place.
  }

  send(_event: SessionEvent): boolean {
    return false;
  }

  end(): void {
    if (this.ended) return;
    this.ended = true;
    this.closed?.('client');
  }

  onClose(cb: (reason: CloseReason) => void): void {
    this.closed = cb;
  }
}
