import { Injectable } from '@nestjs/common';
import { LifecycleService } from '../common/lifecycle.service';
import { DamService, type Admission } from '../dam/dam.service';
import { isQueued } from '../dam/queued-admission';
import type { Credentials } from '../dam/identity';
import type { WaitingConnection } from './session-events';

/**
 * Opt-in waiting, for every transport: a connection that offered to wait (?wait=N, Prefer: wait=N,
 * the handshake's `wait`) and meets a full budget is told so at once (`queued` {position, etaMs},
 * again whenever they change, at most about once a second) and is admitted when the line hands it
 * a slot. It costs no slot while it waits; a client that goes away leaves the line at once.
 */
@Injectable()
export class WaitingRoom {
  constructor(
    private readonly dam: DamService,
    lifecycle: LifecycleService,
  ) {
    // A draining instance hands out no more slots: its waiters hear `draining` and reconnect elsewhere.
    lifecycle.onDrain(() => this.dam.endWaits());
  }

  /**
   * The connection's admission, at once or after waiting; null when the client left while it
   * waited. Throws the refusal (before the connection opened, or after it waited: then the
   * transport tells it in the stream).
   */
  async admit(credentials: Credentials, connection: WaitingConnection, waitMs: number): Promise<Admission | null> {
    const r = await this.dam.admit(credentials, waitMs);
    if (!isQueued(r)) return r;
    if (connection.gone) r.leave();
    else {
      // The session core replaces this once the session starts (SessionsService.start).
      connection.onClose(() => r.leave());
      connection.notify('queued', { position: r.position, etaMs: r.etaMs });
      r.onChange((position, etaMs) => connection.notify('queued', { position, etaMs }));
    }
    return r.admission;
  }
}

/** Longest wait a client may ask for, in s (beyond it the server's own longest wait applies anyway). */
const MAX_WAIT_SEC = 3_600;

/**
 * The wait a request offers, in ms: `?wait=<s>` or `Prefer: wait=<s>` (RFC 7240), 0 without.
 * Seconds, as Prefer's wait is; a bad value is no wait (the preference is only a preference).
 */
export function requestedWaitMs(query: unknown, prefer: string | string[] | undefined): number {
  const fromQuery = typeof query === 'string' || typeof query === 'number' ? String(query) : undefined;
  const header = Array.isArray(prefer) ? prefer.join(',') : prefer;
  const fromPrefer = header === undefined ? undefined : /(?:^|[,;\s])wait\s*=\s*"?(\d+(?:\.\d+)?)"?/i.exec(header)?.[1];
  const raw = fromQuery ?? fromPrefer;
  if (raw === undefined || !/^\d+(\.\d+)?$/.test(raw)) return 0;
  return Math.round(Math.min(Number(raw), MAX_WAIT_SEC) * 1_000);
}
