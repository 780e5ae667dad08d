import { randomBytes, randomUUID } from 'node:crypto';
import { Inject, Injectable } from '@nestjs/common';
import { InjectPinoLogger, PinoLogger } from 'nestjs-pino';
import { GATEWAY_CONFIG, type GatewayConfig } from '../common/config/config';
import { ErrorCode, GatewayException } from '../common/errors';
import { INSTANCE_ID } from '../common/instance';
import type { AdaptiveDeadline } from '../common/redis/adaptive-deadline';
import { RedisFailures } from '../common/redis/redis-failures';
import { REQUEST_DEADLINE } from '../common/redis/redis.module';
import type { Admission } from '../dam/dam.service';
import type { Credentials } from '../dam/identity';
import { EventRing } from '../resume/event-ring';
import { hashHandle, newResumeHandle } from '../resume/resume-id';
import { DetachedConnection } from './detached-connection';
import { SessionCleanup } from './session-cleanup';
import type { CloseReason, SessionConnection, Transport, TransportReach, WaitingConnection } from './session-events';
import { SessionMetrics } from './session-metrics';
import { SessionRegistry, type LocalSession, type SessionResume } from './session-registry';
import { SessionRepository, hashToken, type SessionRecord } from './session.repository';
import { WaitingRoom } from './waiting-room';

/** The outcome of putting a new connection on a session: `gap` when some events it missed are no longer kept. */
export type AttachResult = 'ok' | 'gone' | 'gap';

/** Told of every session that ended here, once, with why. */
export type SessionEndedHook = (s: LocalSession, reason: CloseReason) => void;

/**
 * The session core: open (admit through the dam, store the session), close (from any instance)
 * and the end of a session, for every transport. It emits events to a SessionConnection and
 * never sees the transport under it. A resumable session outlives a dropped connection for
 * SSE_RESUME_MS: its slot stays, its answer goes on into its event ring, and a new connection
 * (attach) gets what it missed; only when the window ends is it closed like any other.
 */
@Injectable()
export class SessionsService {
  private readonly reaches = new Map<Transport, TransportReach>();
  private readonly endedHooks: SessionEndedHook[] = [];

  constructor(
    @Inject(GATEWAY_CONFIG) private readonly config: GatewayConfig,
    @Inject(INSTANCE_ID) private readonly instanceId: string,
    @Inject(REQUEST_DEADLINE) private readonly deadline: AdaptiveDeadline,
    @InjectPinoLogger(SessionsService.name) private readonly logger: PinoLogger,
    private readonly registry: SessionRegistry,
    private readonly repository: SessionRepository,
    private readonly cleanup: SessionCleanup,
    private readonly waitingRoom: WaitingRoom,
    private readonly metrics: SessionMetrics,
    private readonly failures: RedisFailures,
  ) {}

  /** A transport tells how it reaches its connections on other instances (for a DELETE landing elsewhere). */
  registerReach(transport: Transport, reach: TransportReach): void {
    this.reaches.set(transport, reach);
  }

  onEnded(hook: SessionEndedHook): void {
    this.endedHooks.push(hook);
  }

  /**
   * A slot in the dam for a new session, or the refusal (dam_full, user_session_limit, ...). With
   * waitMs > 0 a full budget puts the connection in the line (see WaitingRoom); null: the client
   * left while it waited.
   */
  async admit(credentials: Credentials, connection: WaitingConnection, waitMs = 0): Promise<Admission | null> {
    return this.waitingRoom.admit(credentials, connection, waitMs);
  }

  /**
   * Opens the session on an admitted connection: stores it, starts the connection, sends `session`.
   * Returns null when the client went away meanwhile. The admission's slot is always either the
   * session's or released here.
   */
  async start(admission: Admission, connection: SessionConnection): Promise<LocalSession | null> {
    let session: LocalSession | undefined;
    try {
      if (connection.gone) return this.goneEarly(connection.transport);
      const now = Date.now();
      const resume = this.newResume(connection);
      const record: SessionRecord = {
        sessionId: randomUUID(),
        token: randomBytes(32).toString('base64url'),
        instanceId: this.instanceId,
        transport: connection.transport,
        userId: admission.userId,
        tier: admission.tier,
        createdAt: now,
        expiresAt: now + this.config.DAM_SESSION_MAX_MS,
        resumeHash: resume ? hashHandle(resume.handle) : undefined,
      };
      // Redis away must not hold the session up: it starts local and is written later.
      const persisted = await this.deadline.run(this.repository.create(record)).then(
        () => true,
        (err: unknown) => {
          this.failures.note('session_write', err); // written later, by the session keeper
          return false;
        },
      );
      if (connection.gone) {
        this.cleanup.close(record.sessionId, record.expiresAt);
        return this.goneEarly(connection.transport);
      }
      connection.open({ resumeHandle: resume?.handle });
      session = this.registry.add(record, connection, admission.lease, persisted, resume);
      this.watch(session, connection);
      this.metrics.sessionOpened(record.transport);
      const { sessionId, token, expiresAt } = record;
      this.registry.emit(sessionId, 'session', { sessionId, token, instanceId: this.instanceId, expiresAt });
      this.logger.debug({ sessionId, transport: record.transport, userId: record.userId ?? undefined, persisted }, 'session opened');
      return session;
    } finally {
      // A failure before the session exists, or a client already gone, must not keep the slot.
      if (!session) admission.lease.release();
    }
  }

  /** Ends a session this instance holds, from the server side. */
  end(sessionId: string, reason: CloseReason): boolean {
    return this.registry.end(sessionId, reason);
  }

  /** DELETE /chat/sessions/:id, from any instance. */
  async close(sessionId: string, token: string): Promise<void> {
    // The session is here: the token is checked locally and no Redis round trip is needed.
    const local = this.registry.get(sessionId);
    if (local) {
      if (hashToken(token) !== hashToken(local.record.token)) throw invalidToken();
      this.registry.end(sessionId, 'deleted');
      return;
    }
    const auth = await this.deadline.run(this.repository.authorize(sessionId, token)).catch((err: unknown) => Promise.reject(this.failures.refusal('session', err)));
    if (auth.status === 'not_found') throw new GatewayException(ErrorCode.SessionNotFound, 'No open session with this id.');
    if (auth.status === 'forbidden') throw invalidToken();
    // Removed first, so the session is closed for every instance even if its owner is gone. One
    // round trip of its own under the deadline, not a place in the clean-up's batches (whose runs
    // are sequential). Whatever the client hears, the close is finished: the question in flight is
    // cancelled, or a failed removal is retried by the clean-up until Redis confirms it.
    const removed = this.repository.remove(sessionId);
    removed.then(
      (inflight) => {
        if (inflight) this.cleanup.cancel(inflight);
      },
      () => this.cleanup.close(sessionId, Date.now() + this.config.DAM_SESSION_MAX_MS),
    );
    await this.deadline.run(removed).catch((err: unknown) => Promise.reject(this.failures.refusal('session', err)));
    if (auth.ownerInstanceId === this.instanceId) return;
    const reach = this.reaches.get(auth.transport);
    if (reach) await this.deadline.run(reach.closeRemote(auth.ownerInstanceId, sessionId)).catch((err: unknown) => Promise.reject(this.failures.refusal('session', err)));
  }

  /**
   * Puts a new connection on a session held here (a resume): it gets the events after `after`, then
   * everything as it comes. A connection still on the session (the server may not have seen the
   * old one go) is ended; the dam is not asked, the session keeps its one slot.
   */
  attach(sessionId: string, connection: SessionConnection, after: number): AttachResult {
    const s = this.registry.get(sessionId);
    if (!s?.resume || s.closeReason !== undefined || connection.gone) return 'gone';
    const missed = s.resume.ring.since(after);
    if (missed === null) return 'gap';
    const old = s.connection;
    s.connection = connection;
    s.detachedAt = undefined;
    this.watch(s, connection);
    connection.open({ resumeHandle: s.resume.handle });
    for (const e of missed) connection.send(e);
    // Its close is ignored now: it is no longer the session's connection.
    old.end();
    this.logger.debug({ sessionId, transport: s.record.transport, replayed: missed.length }, 'session resumed');
    return 'ok';
  }

  private newResume(connection: SessionConnection): SessionResume | undefined {
    if (!connection.resumable || this.config.SSE_RESUME_MS === 0) return undefined;
    return { handle: newResumeHandle(), ring: new EventRing(this.config.SSE_RESUME_EVENTS) };
  }

  private watch(s: LocalSession, connection: SessionConnection): void {
    connection.onClose((reason) => this.connectionClosed(s, connection, reason));
  }

  /**
   * A connection closed. The session's current one only (a superseded one is no news): a
   * resumable session the server did not end waits for its client (the keeper ends the wait);
   * any other is over.
   */
  private connectionClosed(s: LocalSession, connection: SessionConnection, reason: CloseReason): void {
    if (this.registry.get(s.record.sessionId) !== s || s.connection !== connection) return;
    if (s.resume && s.closeReason === undefined && (reason === 'client' || reason === 'slow_client')) {
      const waiting = new DetachedConnection(connection.transport);
      s.connection = waiting;
      s.detachedAt = Date.now();
      this.watch(s, waiting);
      this.logger.debug({ sessionId: s.record.sessionId, reason, resumeMs: this.config.SSE_RESUME_MS }, 'stream dropped; the session waits for its client');
      return;
    }
    this.closed(s, reason);
  }

  /** The session is over (the client left for good, or the server ended it): frees everything, once. */
  private closed(opened: LocalSession, reason: CloseReason): void {
    const s = this.registry.remove(opened.record.sessionId);
    if (!s) return;
    s.lease.release();
    // Unsubscribing cancels the question if it is still being answered here.
    s.inflight?.answer?.unsubscribe();
    const why = s.closeReason ?? reason;
    this.metrics.sessionClosed(s.record.transport, why);
    this.cleanup.close(s.record.sessionId, s.record.expiresAt);
    for (const hook of this.endedHooks) hook(s, why);
    this.logger.debug({ sessionId: s.record.sessionId, transport: s.record.transport, reason: why }, 'session closed');
  }

  private goneEarly(transport: Transport): null {
    this.metrics.sessionClosed(transport, 'client');
    return null;
  }
}

function invalidToken(): GatewayException {
  return new GatewayException(ErrorCode.InvalidToken, 'The token does not belong to this session.');
}
