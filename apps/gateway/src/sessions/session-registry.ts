import { Injectable } from '@nestjs/common';
import type { Lease } from '@traffic-dam/dam';
import type { CloseReason, ExpiredReason, SessionConnection, SessionEventData, SessionEventName, SessionEvent, Transport } from './session-events';
import type { SessionRecord } from './session.repository';

/** The question in flight on a session, wherever it was asked, as the instance holding it watches it. */
export interface Inflight {
  messageId: string;
  deadline: number;
  acceptedAt: number;
  /** The last token seq passed on (-1: none yet). */
  lastSeq: number;
  answer?: { unsubscribe(): void };
}

/** What a resumable session keeps for a client that reconnects (see resume/). */
export interface SessionResume {
  /** The credential in every event id (`<handle>.<n>`); Redis has only its hash. */
  readonly handle: string;
  /** The last events sent, for a client that reconnects. */
  readonly ring: { push(e: SessionEvent): void; since(after: number): SessionEvent[] | null };
}

/** A session this instance holds: its record, its connection and its hold on the dam. */
export interface LocalSession {
  readonly record: SessionRecord;
  /** The connection carrying its events now; a resume puts a new one in its place. */
  connection: SessionConnection;
  readonly resume?: SessionResume;
  /** Since when it has had no client (the connection dropped; a resume may still come). */
  detachedAt?: number;
  /** The dam's hold; released exactly once, when the session ends. */
  readonly lease: Lease;
  readonly openedAt: number;
  /** False while the record could not be written to Redis (Redis away). */
  persisted: boolean;
  /** Last time a question or its answer went through this session (ms). */
  lastActivity: number;
  inflight?: Inflight;
  /** The last question that ended here (done, error or lost): late replies to it are dropped. */
  lastEnded?: string;
  /** Set once the session is ending, with why. */
  closeReason?: CloseReason;
  lastEventId: number;
}

/** The sessions this instance holds, whatever transport carries them. No timers: its owners run those. */
@Injectable()
export class SessionRegistry {
  private readonly sessions = new Map<string, LocalSession>();

  get size(): number {
    return this.sessions.size;
  }

  sizeOf(transport: Transport): number {
    let n = 0;
    for (const s of this.sessions.values()) if (s.record.transport === transport) n++;
    return n;
  }

  add(record: SessionRecord, connection: SessionConnection, lease: Lease, persisted: boolean, resume?: SessionResume): LocalSession {
    const now = Date.now();
    const s: LocalSession = { record, connection, resume, lease, openedAt: now, persisted, lastActivity: now, lastEventId: 0 };
    this.sessions.set(record.sessionId, s);
    return s;
  }

  get(sessionId: string): LocalSession | undefined {
    return this.sessions.get(sessionId);
  }

  /** Forgets a session; returns it once, so its clean-up runs exactly once. */
  remove(sessionId: string): LocalSession | undefined {
    const s = this.sessions.get(sessionId);
    if (s) this.sessions.delete(sessionId);
    return s;
  }

  all(): IterableIterator<LocalSession> {
    return this.sessions.values();
  }

  /** Sessions not yet ending (an ending one stays here until its connection closed). */
  open(): LocalSession[] {
    return [...this.sessions.values()].filter((s) => s.closeReason === undefined);
  }

  /** Emits one event to the session's connection; false when it is not here or could not take it. */
  emit<N extends SessionEventName>(sessionId: string, name: N, data: SessionEventData[N]): boolean {
    const s = this.sessions.get(sessionId);
    if (!s) return false;
    const event = { id: ++s.lastEventId, name, data } as SessionEvent;
    // Kept whether or not the client has it now: a resume replays from here.
    s.resume?.ring.push(event);
    return s.connection.send(event);
  }

  /** Ends a session from the server side, after `expired` when it expires. Its close handler cleans up. */
  end(sessionId: string, reason: CloseReason, expired?: ExpiredReason): boolean {
    const s = this.sessions.get(sessionId);
    if (!s) return false;
    s.closeReason ??= reason;
    if (expired) this.emit(sessionId, 'expired', { reason: expired });
    s.connection.end();
    return true;
  }

  /** Marks the session busy now (a question or an answer passed), for the idle timeout. */
  touch(sessionId: string): void {
    const s = this.sessions.get(sessionId);
    if (s) s.lastActivity = Date.now();
  }

  /** Sessions without a client since before `since` (their resume window is over). */
  detachedBefore(since: number): LocalSession[] {
    return [...this.sessions.values()].filter((s) => s.detachedAt !== undefined && s.detachedAt <= since && s.closeReason === undefined);
  }

  /** Ends every session past its lifetime or idle for idleMs, with `expired`; returns how many. */
  expire(now: number, idleMs: number): number {
    let n = 0;
    for (const s of this.sessions.values()) {
      const reason = now >= s.record.expiresAt ? 'lifetime' : now - s.lastActivity >= idleMs ? 'idle' : null;
      if (reason === null || s.closeReason) continue;
      this.end(s.record.sessionId, reason, reason);
      n++;
    }
    return n;
  }
}
