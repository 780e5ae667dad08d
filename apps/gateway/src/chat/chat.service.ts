import { randomBytes, randomUUID } from 'node:crypto';
import { Inject, Injectable, type OnApplicationBootstrap, type OnModuleDestroy } from '@nestjs/common';
import type { Request, Response } from 'express';
import type { Redis } from 'ioredis';
import { InjectPinoLogger, PinoLogger } from 'nestjs-pino';
import {
  AI_PATTERNS,
  AiBridgeClient,
  AiBridgeTransport,
  AnswerTimeoutError,
  protocolKeys,
  type AnswerRequest,
  type Reply,
} from '@traffic-dam/ai-bridge';
import { GATEWAY_CONFIG, type GatewayConfig } from '../common/config/config';
import { ErrorCode, GatewayException } from '../common/errors';
import { INSTANCE_ID } from '../common/instance';
import { LifecycleService } from '../common/lifecycle.service';
import { RedisFailures } from '../common/redis/redis-failures';
import { REDIS_SUBSCRIBER } from '../common/redis/redis.module';
import { MetricsService } from '../metrics/metrics.service';
import { parseBearer, parseQuestionBody } from './question-body';
import { SessionRepository, controlChannel, hashToken, type NewSession } from './session.repository';
import { SSE_HEADERS } from './sse';
import { StreamHub, type CloseReason, type LocalStream } from './stream-hub';
import { DamService } from '../dam/dam.service';
import { AiCapacityService } from '../ai/ai-capacity.service';
import { BreakerService, PROBE_SESSION } from '../ai/breaker.service';
import { withDeadline } from '@traffic-dam/dam';

export interface SessionEvent {
  sessionId: string;
  token: string;
  instanceId: string;
  expiresAt: number;
}

/** How long after its deadline a question still holds the session's in-flight slot. */
const INFLIGHT_SLACK_MS = 5_000;
/** How long past its deadline the gateway waits for the worker's own deadline_exceeded. */
const ANSWER_GRACE_MS = 1_000;

/** The session flow of the HTTP contract, independent of the transport that carries events. */
@Injectable()
export class ChatService implements OnApplicationBootstrap, OnModuleDestroy {
  readonly hub: StreamHub;
  private readonly persistTimer: NodeJS.Timeout;
  private readonly expiryTimer: NodeJS.Timeout;
  private readonly redisFailures: RedisFailures;

  constructor(
    @Inject(GATEWAY_CONFIG) private readonly config: GatewayConfig,
    @Inject(INSTANCE_ID) private readonly instanceId: string,
    @Inject(REDIS_SUBSCRIBER) private readonly subscriber: Redis,
    @InjectPinoLogger(ChatService.name) private readonly logger: PinoLogger,
    private readonly sessions: SessionRepository,
    private readonly bridge: AiBridgeClient,
    private readonly ai: AiBridgeTransport,
    private readonly metrics: MetricsService,
    private readonly lifecycle: LifecycleService,
    private readonly dam: DamService,
    private readonly aiCapacity: AiCapacityService,
    private readonly breaker: BreakerService,
  ) {
    this.hub = new StreamHub(config.SSE_PING_MS);
    this.redisFailures = new RedisFailures(metrics.redisErrors, logger);
    this.persistTimer = setInterval(() => {
      if (this.hub.unpersisted().length > 0) void this.persistPending();
    }, 1_000);
    this.persistTimer.unref();
    // One sweep for all sessions' TTLs; fine enough that a short test TTL is kept to ~1/4.
    const shortest = Math.min(config.DAM_SESSION_IDLE_MS, config.DAM_SESSION_MAX_MS, config.QUESTION_DEADLINE_MS);
    const sweepMs = Math.max(50, Math.min(1_000, Math.floor(shortest / 4)));
    this.expiryTimer = setInterval(() => {
      const now = Date.now();
      const n = this.hub.expire(now, config.DAM_SESSION_IDLE_MS);
      if (n > 0) this.logger.info({ expired: n }, 'sessions expired');
    }, sweepMs);
    this.expiryTimer.unref();
  }

  async onApplicationBootstrap(): Promise<void> {
    // Every outcome counts for the breaker once, here, whoever watches the answer.
    this.bridge.onReply((r) => {
      if (r.sessionId !== PROBE_SESSION) this.breaker.record(r);
    });
    this.ai.handleUnclaimed((r) => this.adopt(r));
    await this.ai.connect();
    const control = controlChannel(this.instanceId);
    this.subscriber.on('message', (channel: string, payload: string) => {
      if (channel === control) this.onControl(payload);
    });
    await this.subscriber.subscribe(control);
  }

  onModuleDestroy(): void {
    this.hub.stop();
    clearInterval(this.persistTimer);
    clearInterval(this.expiryTimer);
  }

  /** GET /chat/stream: admit through the dam, store the session, then start the SSE stream. */
  async openStream(req: Request, res: Response): Promise<void> {
    if (this.lifecycle.draining) {
      throw new GatewayException(ErrorCode.Draining, 'This instance is shutting down; connect again.', { retryAfterSec: 1 });
    }
    // Listen before the first await: a client that gives up while the dam or Redis answers closes
    // the response now, and a 'close' that already fired never fires again (the slot would leak).
    let clientGone = false;
    let opened: LocalStream | undefined;
    res.once('close', () => {
      clientGone = true;
      if (opened) void this.onStreamClosed(opened.session.sessionId, opened.closeReason ?? 'client');
    });
    const { lease, userId } = await this.dam.admitStream(req);
    try {
      if (clientGone) {
        this.metrics.sseClosed.inc({ reason: 'client' });
        return;
      }
      const now = Date.now();
      const session: NewSession = {
        sessionId: randomUUID(),
        token: randomBytes(32).toString('base64url'),
        instanceId: this.instanceId,
        userId,
        createdAt: now,
        expiresAt: now + this.config.DAM_SESSION_MAX_MS,
      };
      // Redis away must not hold the stream up: the session starts local and is written later.
      const persisted = await withDeadline(this.sessions.create(session), this.config.REDIS_REQUEST_TIMEOUT_MS).then(
        () => true,
        (err: unknown) => {
          this.redisFailures.note('session_write', err); // written later, by persistPending
          return false;
        },
      );
      const { sessionId } = session;
      if (clientGone) {
        this.metrics.sseClosed.inc({ reason: 'client' });
        void this.sessions.remove(sessionId).catch(() => undefined);
        return;
      }
      this.logger.assign({ sessionId });
      res.status(200);
      for (const [k, v] of Object.entries(SSE_HEADERS)) res.setHeader(k, v);
      res.flushHeaders();
      opened = this.hub.add(session, res, lease, persisted);
      this.metrics.sseOpened.inc();
      this.metrics.sseOpen.set(this.hub.size);
      req.socket.setKeepAlive(true, 10_000);
      const event: SessionEvent = { sessionId, token: session.token, instanceId: this.instanceId, expiresAt: session.expiresAt };
      this.hub.send(sessionId, 'session', event);
      this.logger.debug({ userId: userId ?? undefined, persisted }, 'session opened');
    } finally {
      // A failure before the stream exists, or a client already gone, must not keep the slot.
      if (!opened) lease.release();
    }
  }

  /** POST /chat/sessions/:id/messages. Returns the message id and the rate headers to send. */
  async ask(
    sessionId: string,
    authorization: string | undefined,
    body: unknown,
    traceId: string,
  ): Promise<{ messageId: string; headers: Record<string, string> }> {
    const token = this.requireToken(authorization);
    const question = parseQuestionBody(body, this.config.QUESTION_MAX_CHARS);
    // Before any Redis round trip: under overload most questions end here, at no cost.
    this.refuseIfKnownOverloaded();
    const messageId = randomUUID();
    const deadline = Date.now() + this.config.QUESTION_DEADLINE_MS;
    const inflightTtl = this.config.QUESTION_DEADLINE_MS + INFLIGHT_SLACK_MS;
    let claim = await this.claimInflight(sessionId, token, messageId, inflightTtl);
    if (claim.status === 'not_found' && (await this.persistIfLocal(sessionId))) {
      claim = await this.claimInflight(sessionId, token, messageId, inflightTtl);
    }
    switch (claim.status) {
      case 'not_found': {
        // While Redis takes no writes, a session opened on another instance has no record yet:
        // not "gone", so ask again later rather than give it up.
        const failure = this.dam.redisFailure;
        if (failure !== null) throw RedisFailures.unavailable(failure);
        this.metrics.questions.inc({ outcome: 'session_not_found' });
        throw new GatewayException(ErrorCode.SessionNotFound, 'No open session with this id.');
      }
      case 'forbidden':
        this.metrics.questions.inc({ outcome: 'forbidden' });
        throw new GatewayException(ErrorCode.InvalidToken, 'The token does not belong to this session.');
      case 'busy':
        this.metrics.questions.inc({ outcome: 'in_flight' });
        throw new GatewayException(ErrorCode.QuestionInFlight, 'Wait for the current answer to finish (done or error).');
      case 'draining':
        // Its stream ends within the drain's grace period; a new stream lands on another instance.
        this.metrics.questions.inc({ outcome: 'draining' });
        throw new GatewayException(ErrorCode.Draining, "This session's instance is shutting down; open a new stream and ask there.", {
          retryAfterSec: 1,
        });
      case 'ok':
        break;
    }
    try {
      // The gate may have refused others while this claim waited in line for Redis.
      this.refuseIfKnownOverloaded();
    } catch (err) {
      await this.sessions.release(sessionId, messageId).catch(() => undefined);
      throw err;
    }
    let headers: Record<string, string>;
    try {
      headers = await this.dam.checkQuestionRate(claim.userId);
    } catch (err) {
      await this.sessions.release(sessionId, messageId).catch(() => undefined);
      this.metrics.questions.inc({ outcome: 'rate_limited' });
      throw err;
    }
    try {
      await withDeadline(
        this.aiCapacity.enqueue({
          id: messageId,
          sessionId,
          replyTo: protocolKeys.replyChannel(claim.ownerInstanceId),
          question,
          deadline,
          attempt: 1,
          traceId,
        }),
        this.config.REDIS_REQUEST_TIMEOUT_MS,
      );
    } catch (err) {
      await this.sessions.release(sessionId, messageId).catch(() => undefined);
      if (err instanceof GatewayException) {
        this.metrics.questions.inc({ outcome: err.code });
        throw err;
      }
      // It may still have been queued: the worker must not answer a question the client was told failed.
      void this.bridge.cancel(messageId).catch(() => undefined);
      this.metrics.questions.inc({ outcome: 'redis_unavailable' });
      throw this.redisFailures.refusal('enqueue', err);
    }
    this.metrics.questions.inc({ outcome: 'accepted' });
    this.hub.touch(sessionId);
    // The instance holding the stream watches the deadline, so a lost answer still ends in an error.
    if (claim.ownerInstanceId === this.instanceId) this.trackInflight(sessionId, messageId, deadline);
    else void this.sessions.tellAsked(claim.ownerInstanceId, sessionId, messageId, deadline).catch(() => undefined);
    this.logger.debug({ sessionId, messageId, owner: claim.ownerInstanceId }, 'question accepted');
    return { messageId, headers };
  }

  private refuseIfKnownOverloaded(): void {
    try {
      this.aiCapacity.refuseIfKnownOverloaded();
    } catch (err) {
      this.metrics.questions.inc({ outcome: ErrorCode.AiOverloaded });
      throw err;
    }
  }

  /**
   * Claims the session's in-flight slot for messageId. A claim that timed out may still have run
   * in Redis: it is released (only if it holds this message), else the session would answer
   * question_in_flight until the claim's TTL.
   */
  private async claimInflight(sessionId: string, token: string, messageId: string, ttlMs: number): ReturnType<SessionRepository['claim']> {
    try {
      return await this.redisCall(() => this.sessions.claim(sessionId, token, messageId, ttlMs));
    } catch (err) {
      void this.sessions.release(sessionId, messageId).catch(() => undefined);
      throw err;
    }
  }

  /** Writes a session that exists only here (opened while Redis was away); true if it did. */
  private async persistIfLocal(sessionId: string): Promise<boolean> {
    const s = this.hub.get(sessionId);
    if (!s || s.persisted) return false;
    await this.redisCall(() => this.sessions.create(s.session));
    s.persisted = true;
    return true;
  }

  /** Retries the sessions opened while Redis was away; runs on a timer only while there are some. */
  private async persistPending(): Promise<void> {
    for (const s of this.hub.unpersisted()) {
      try {
        await withDeadline(this.sessions.create(s.session), 500);
        s.persisted = true;
      } catch {
        return; // still away; the next tick tries again
      }
    }
  }

  /** DELETE /chat/sessions/:id: works from any instance. */
  async close(sessionId: string, authorization: string | undefined): Promise<void> {
    const token = this.requireToken(authorization);
    // The stream is here: the token is checked locally and no Redis round trip is needed.
    const local = this.hub.get(sessionId);
    if (local) {
      if (hashToken(token) !== hashToken(local.session.token)) {
        throw new GatewayException(ErrorCode.InvalidToken, 'The token does not belong to this session.');
      }
      this.hub.end(sessionId, 'deleted');
      return;
    }
    const auth = await this.redisCall(() => this.sessions.authorize(sessionId, token));
    switch (auth.status) {
      case 'not_found':
        throw new GatewayException(ErrorCode.SessionNotFound, 'No open session with this id.');
      case 'forbidden':
        throw new GatewayException(ErrorCode.InvalidToken, 'The token does not belong to this session.');
      case 'busy':
      case 'draining':
      case 'ok':
        break;
    }
    // Remove first so the session is closed for every instance even if the owner is gone.
    const inflight = await this.redisCall(() => this.sessions.remove(sessionId));
    if (inflight) await this.bridge.cancel(inflight).catch(() => undefined);
    if (auth.ownerInstanceId !== this.instanceId) {
      await this.redisCall(() => this.sessions.requestClose(auth.ownerInstanceId, sessionId));
    }
  }

  /** Throws 401 unless the header carries a bearer token. */
  assertToken(authorization: string | undefined): void {
    this.requireToken(authorization);
  }

  private requireToken(authorization: string | undefined): string {
    const token = parseBearer(authorization);
    if (token === null) {
      throw new GatewayException(ErrorCode.MissingToken, 'Send the token from the session event as "Authorization: Bearer <token>".');
    }
    return token;
  }

  /** Every Redis call on a request path has a short deadline: a dead Redis answers 503 fast. */
  private async redisCall<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await withDeadline(fn(), this.config.REDIS_REQUEST_TIMEOUT_MS);
    } catch (err) {
      throw this.redisFailures.refusal('session', err);
    }
  }

  /**
   * A reply for a question nobody here watches yet: its stream is here and the word from the
   * instance that accepted it is still on its way, so watch it now; else the client is gone.
   */
  private adopt(reply: Reply): boolean {
    const { sessionId, messageId } = reply;
    if (sessionId === PROBE_SESSION) return false;
    const s = this.hub.get(sessionId);
    // Gone, or a late reply to an answer that already ended (say, a worker resumed after the
    // question was dead-lettered): the client must not get tokens after its error.
    if (!s || s.lastEnded === messageId) {
      // The transport cancels the question: no generating into the void.
      this.metrics.orphanReplies.inc();
      return false;
    }
    this.trackInflight(sessionId, messageId, Date.now() + this.config.QUESTION_DEADLINE_MS);
    return true;
  }

  private onReply(reply: Reply): void {
    const { sessionId, messageId } = reply;
    if (!this.hub.has(sessionId)) return;
    this.metrics.replies.inc({ type: reply.type });
    this.hub.touch(sessionId);
    if (reply.type === 'token') {
      // A question re-answered after a worker restart starts again at seq 0: the client already
      // has those tokens, so only the ones past what it got are passed on.
      const inflight = this.hub.get(sessionId)?.inflight;
      if (inflight?.messageId === messageId) {
        if (reply.seq <= inflight.lastSeq) return;
        if (inflight.lastSeq < 0) this.metrics.answerTtft.observe((Date.now() - inflight.acceptedAt) / 1000);
        inflight.lastSeq = reply.seq;
      }
      this.hub.send(sessionId, 'token', { messageId, seq: reply.seq, text: reply.text });
      return;
    }
    // Free the session for its next question before the client hears the answer ended: the
    // release goes on the wire first, so a client that asks again at once (possibly through
    // another instance) does not race it and get 409 question_in_flight.
    void this.sessions.release(sessionId, messageId).catch((err: unknown) => {
      this.logger.warn({ err, sessionId, messageId }, 'in-flight release failed; it expires by TTL');
    });
    if (reply.type === 'done') this.hub.send(sessionId, 'done', { messageId, tokens: reply.tokens });
    else this.hub.send(sessionId, 'error', { messageId, code: reply.code, message: reply.message });
    const stream = this.hub.get(sessionId);
    if (stream?.inflight?.messageId === messageId) {
      const outcome = reply.type === 'done' ? 'done' : reply.code;
      this.metrics.answerDuration.observe({ outcome }, (Date.now() - stream.inflight.acceptedAt) / 1000);
      stream.inflight = undefined;
    }
    if (stream) stream.lastEnded = messageId;
    this.logger.debug({ sessionId, messageId, outcome: reply.type }, 'answer finished');
  }

  /**
   * Watches the answer through the transport until done or error. The instance holding the stream
   * does this, so a lost answer (a worker died with it) still ends in an error past the deadline.
   */
  private trackInflight(sessionId: string, messageId: string, deadline: number): void {
    const s = this.hub.get(sessionId);
    if (!s) return;
    // The reply and the word from the accepting instance race; whichever comes second is a no-op.
    if (s.inflight?.messageId === messageId) {
      s.inflight.deadline = Math.min(s.inflight.deadline, deadline);
      return;
    }
    s.inflight?.answer?.unsubscribe();
    // Every instance has the same deadline setting, so the deadline tells when it was accepted.
    const acceptedAt = deadline - this.config.QUESTION_DEADLINE_MS;
    const inflight: NonNullable<LocalStream['inflight']> = { messageId, deadline, acceptedAt, lastSeq: -1 };
    s.inflight = inflight;
    const request: AnswerRequest = { messageId, timeoutMs: deadline + ANSWER_GRACE_MS - Date.now() };
    inflight.answer = this.ai.send<Reply, AnswerRequest>(AI_PATTERNS.answer, request).subscribe({
      next: (r) => this.onReply(r),
      error: (err: unknown) => {
        if (err instanceof AnswerTimeoutError) this.answerLost(sessionId, messageId);
        else this.logger.warn({ err: String(err), sessionId, messageId }, 'answer watch failed');
      },
    });
  }

  /** No done or error came by the deadline (a worker died with it): the client hears so. */
  private answerLost(sessionId: string, messageId: string): void {
    const s = this.hub.get(sessionId);
    if (!s || s.inflight?.messageId !== messageId) return;
    this.metrics.answerDuration.observe({ outcome: 'lost' }, (Date.now() - s.inflight.acceptedAt) / 1000);
    s.inflight = undefined;
    s.lastEnded = messageId;
    this.hub.send(sessionId, 'error', { messageId, code: 'deadline_exceeded', message: 'No answer arrived before the deadline.' });
    this.metrics.answersLost.inc();
    this.breaker.recordTimeout();
    this.logger.warn({ sessionId, messageId }, 'answer lost: no reply before the deadline');
    void this.sessions.release(sessionId, messageId).catch(() => undefined);
  }

  private onControl(payload: string): void {
    try {
      const msg = JSON.parse(payload) as { type?: unknown; sessionId?: unknown; messageId?: unknown; deadline?: unknown };
      if (typeof msg.sessionId !== 'string') return;
      if (msg.type === 'close') this.hub.end(msg.sessionId, 'deleted');
      if (msg.type === 'asked' && typeof msg.messageId === 'string' && typeof msg.deadline === 'number') {
        this.trackInflight(msg.sessionId, msg.messageId, msg.deadline);
      }
    } catch {
      this.logger.warn('ignored a malformed control message');
    }
  }

  private async onStreamClosed(sessionId: string, reason: CloseReason): Promise<void> {
    const stream = this.hub.remove(sessionId);
    if (!stream) return;
    stream.lease.release();
    // Unsubscribing cancels the question if it is still being answered.
    stream.inflight?.answer?.unsubscribe();
    this.metrics.sseOpen.set(this.hub.size);
    this.metrics.sseClosed.inc({ reason });
    try {
      const inflight = await this.sessions.remove(sessionId);
      if (inflight) await this.bridge.cancel(inflight);
      this.logger.debug({ sessionId, reason, cancelled: inflight ?? undefined }, 'session closed');
    } catch (err) {
      // The session key expires by its TTL; the worker stops at the question's deadline.
      this.logger.warn({ err: String(err), sessionId, reason }, 'session clean-up failed: Redis unavailable');
    }
  }
}
