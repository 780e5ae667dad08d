import { randomBytes, randomUUID } from 'node:crypto';
import { Inject, Injectable, type OnApplicationBootstrap, type OnModuleDestroy } from '@nestjs/common';
import type { Request, Response } from 'express';
import type { Redis } from 'ioredis';
import { InjectPinoLogger, PinoLogger } from 'nestjs-pino';
import { AiBridgeClient, protocolKeys, type Reply } from '@traffic-dam/ai-bridge';
import { GATEWAY_CONFIG, type GatewayConfig } from '../common/config/config';
import { ErrorCode, GatewayException } from '../common/errors';
import { INSTANCE_ID } from '../common/instance';
import { LifecycleService } from '../common/lifecycle.service';
import { REDIS_SUBSCRIBER } from '../common/redis/redis.module';
import { MetricsService } from '../metrics/metrics.service';
import { parseBearer, parseQuestionBody } from './question-body';
import { SessionRepository, controlChannel } from './session.repository';
import { SSE_HEADERS } from './sse';
import { StreamHub, type CloseReason } from './stream-hub';

export interface SessionEvent {
  sessionId: string;
  token: string;
  instanceId: string;
  expiresAt: number;
}

/** How long after its deadline a question still holds the session's in-flight slot. */
const INFLIGHT_SLACK_MS = 5_000;

/** The session flow of the HTTP contract, independent of the transport that carries events. */
@Injectable()
export class ChatService implements OnApplicationBootstrap, OnModuleDestroy {
  readonly hub: StreamHub;

  constructor(
    @Inject(GATEWAY_CONFIG) private readonly config: GatewayConfig,
    @Inject(INSTANCE_ID) private readonly instanceId: string,
    @Inject(REDIS_SUBSCRIBER) private readonly subscriber: Redis,
    @InjectPinoLogger(ChatService.name) private readonly logger: PinoLogger,
    private readonly sessions: SessionRepository,
    private readonly bridge: AiBridgeClient,
    private readonly metrics: MetricsService,
    private readonly lifecycle: LifecycleService,
  ) {
    this.hub = new StreamHub(config.SSE_PING_MS);
    lifecycle.onDrain(() => this.drain());
  }

  async onApplicationBootstrap(): Promise<void> {
    this.bridge.onReply((r) => this.onReply(r));
    await this.bridge.start();
    const control = controlChannel(this.instanceId);
    this.subscriber.on('message', (channel: string, payload: string) => {
      if (channel === control) this.onControl(payload);
    });
    await this.subscriber.subscribe(control);
  }

  onModuleDestroy(): void {
    this.hub.stop();
  }

  /** GET /chat/stream: create the session in Redis, then start the SSE stream. */
  async openStream(req: Request, res: Response): Promise<void> {
    if (this.lifecycle.draining) {
      throw new GatewayException(ErrorCode.Draining, 'This instance is shutting down; connect again.', { retryAfterSec: 1 });
    }
    const now = Date.now();
    const session: SessionEvent = {
      sessionId: randomUUID(),
      token: randomBytes(32).toString('base64url'),
      instanceId: this.instanceId,
      expiresAt: now + this.config.SESSION_MAX_MS,
    };
    try {
      await this.sessions.create({ ...session, createdAt: now });
    } catch (err) {
      this.logger.warn({ err }, 'session create failed: Redis unavailable');
      throw new GatewayException(ErrorCode.RedisUnavailable, 'Sessions cannot be stored right now.', { retryAfterSec: 1 });
    }
    const { sessionId } = session;
    this.logger.assign({ sessionId });
    res.status(200);
    for (const [k, v] of Object.entries(SSE_HEADERS)) res.setHeader(k, v);
    res.flushHeaders();
    const stream = this.hub.add(sessionId, res);
    this.metrics.sseOpened.inc();
    this.metrics.sseOpen.set(this.hub.size);
    res.once('close', () => {
      void this.onStreamClosed(sessionId, stream.closeReason ?? 'client');
    });
    // A client that vanished between accept and here would never get a close event otherwise.
    req.socket.setKeepAlive(true, 10_000);
    this.hub.send(sessionId, 'session', session);
    this.logger.info('session opened');
  }

  /** POST /chat/sessions/:id/messages. */
  async ask(sessionId: string, authorization: string | undefined, body: unknown, traceId: string): Promise<{ messageId: string }> {
    const token = this.requireToken(authorization);
    const question = parseQuestionBody(body, this.config.QUESTION_MAX_CHARS);
    const messageId = randomUUID();
    const deadline = Date.now() + this.config.QUESTION_DEADLINE_MS;
    const claim = await this.redisCall(() =>
      this.sessions.claim(sessionId, token, messageId, this.config.QUESTION_DEADLINE_MS + INFLIGHT_SLACK_MS),
    );
    switch (claim.status) {
      case 'not_found':
        this.metrics.questions.inc({ outcome: 'session_not_found' });
        throw new GatewayException(ErrorCode.SessionNotFound, 'No open session with this id.');
      case 'forbidden':
        this.metrics.questions.inc({ outcome: 'forbidden' });
        throw new GatewayException(ErrorCode.InvalidToken, 'The token does not belong to this session.');
      case 'busy':
        this.metrics.questions.inc({ outcome: 'in_flight' });
        throw new GatewayException(ErrorCode.QuestionInFlight, 'Wait for the current answer to finish (done or error).');
      case 'ok':
        break;
    }
    try {
      await this.bridge.ask({
        id: messageId,
        sessionId,
        replyTo: protocolKeys.replyChannel(claim.ownerInstanceId),
        question,
        deadline,
        attempt: 1,
        traceId,
      });
    } catch (err) {
      await this.sessions.release(sessionId, messageId).catch(() => undefined);
      this.logger.warn({ err, sessionId, messageId }, 'question not queued: Redis unavailable');
      this.metrics.questions.inc({ outcome: 'redis_unavailable' });
      throw new GatewayException(ErrorCode.RedisUnavailable, 'The question could not be queued.', { retryAfterSec: 1 });
    }
    this.metrics.questions.inc({ outcome: 'accepted' });
    this.logger.info({ sessionId, messageId, owner: claim.ownerInstanceId }, 'question accepted');
    return { messageId };
  }

  /** DELETE /chat/sessions/:id: works from any instance. */
  async close(sessionId: string, authorization: string | undefined): Promise<void> {
    const token = this.requireToken(authorization);
    const auth = await this.redisCall(() => this.sessions.authorize(sessionId, token));
    switch (auth.status) {
      case 'not_found':
        throw new GatewayException(ErrorCode.SessionNotFound, 'No open session with this id.');
      case 'forbidden':
        throw new GatewayException(ErrorCode.InvalidToken, 'The token does not belong to this session.');
      case 'busy':
      case 'ok':
        break;
    }
    if (auth.ownerInstanceId === this.instanceId && this.hub.end(sessionId, 'deleted')) return;
    // Remove first so the session is closed for every instance even if the owner is gone.
    const inflight = await this.redisCall(() => this.sessions.remove(sessionId));
    if (inflight) await this.bridge.cancel(inflight).catch(() => undefined);
    await this.redisCall(() => this.sessions.requestClose(auth.ownerInstanceId, sessionId));
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

  private async redisCall<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      this.logger.warn({ err }, 'Redis call failed');
      throw new GatewayException(ErrorCode.RedisUnavailable, 'Shared state is unavailable; try again.', { retryAfterSec: 1 });
    }
  }

  private onReply(reply: Reply): void {
    const { sessionId, messageId } = reply;
    if (!this.hub.has(sessionId)) {
      // The client is gone: stop the worker instead of generating into the void.
      this.metrics.orphanReplies.inc();
      if (reply.type === 'token') void this.bridge.cancel(messageId).catch(() => undefined);
      return;
    }
    this.metrics.replies.inc({ type: reply.type });
    switch (reply.type) {
      case 'token':
        this.hub.send(sessionId, 'token', { messageId, seq: reply.seq, text: reply.text });
        return;
      case 'done':
        this.hub.send(sessionId, 'done', { messageId, tokens: reply.tokens });
        break;
      case 'error':
        this.hub.send(sessionId, 'error', { messageId, code: reply.code, message: reply.message });
        break;
    }
    this.logger.info({ sessionId, messageId, outcome: reply.type }, 'answer finished');
    void this.sessions.release(sessionId, messageId).catch((err: unknown) => {
      this.logger.warn({ err, sessionId, messageId }, 'in-flight release failed; it expires by TTL');
    });
  }

  private onControl(payload: string): void {
    try {
      const msg = JSON.parse(payload) as { type?: unknown; sessionId?: unknown };
      if (msg.type === 'close' && typeof msg.sessionId === 'string') this.hub.end(msg.sessionId, 'deleted');
    } catch {
      this.logger.warn('ignored a malformed control message');
    }
  }

  private async onStreamClosed(sessionId: string, reason: CloseReason): Promise<void> {
    if (!this.hub.remove(sessionId)) return;
    this.metrics.sseOpen.set(this.hub.size);
    this.metrics.sseClosed.inc({ reason });
    try {
      const inflight = await this.sessions.remove(sessionId);
      if (inflight) await this.bridge.cancel(inflight);
      this.logger.info({ sessionId, reason, cancelled: inflight ?? undefined }, 'session closed');
    } catch (err) {
      // The session key expires by its TTL; the worker stops at the question's deadline.
      this.logger.warn({ err, sessionId, reason }, 'session clean-up failed: Redis unavailable');
    }
  }

  private async drain(): Promise<void> {
    for (const id of this.hub.ids()) {
      this.hub.end(id, 'draining', { event: 'expired', data: { reason: 'draining' } });
    }
    // Give the close handlers their Redis round trips before connections shut.
    const until = Date.now() + Math.min(this.config.SHUTDOWN_GRACE_MS, 2_000);
    while (this.hub.size > 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
  }
}
