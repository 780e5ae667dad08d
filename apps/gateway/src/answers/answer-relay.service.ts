import { Inject, Injectable, type OnApplicationBootstrap } from '@nestjs/common';
import { InjectPinoLogger, PinoLogger } from 'nestjs-pino';
import { AiClient, AnswerTimeoutError, type Reply } from '@traffic-dam/ai-bridge';
import { BreakerService, PROBE_SESSION } from '../ai/breaker.service';
import { GATEWAY_CONFIG, type GatewayConfig } from '../common/config/config';
import { INSTANCE_ID } from '../common/instance';
import { MetricsService } from '../metrics/metrics.service';
import { ControlChannel } from '../sessions/control-channel';
import { SessionRegistry, type Inflight, type LocalSession } from '../sessions/session-registry';
import { SessionRepository } from '../sessions/session.repository';
import { QueuedQuestions, type QueuePlace } from './queued-questions';

/** An accepted question as the instance holding its session watches it. */
export interface AcceptedQuestion {
  deadline: number;
  acceptedAt?: number;
  /** Where it stood in the AI queue, when it waits behind others and its client offered to wait. */
  queue?: QueuePlace;
}

/** How long past its deadline the gateway waits for the worker's own deadline_exceeded. */
const ANSWER_GRACE_MS = 1_000;

/**
 * Relays answers to the sessions this instance holds: the worker's replies become the session's
 * `token`, `done` and `failed` events. Only a question the session was told was accepted is
 * relayed: accepted here, or announced by the instance that accepted it. The instance holding the
 * session watches the deadline, so a lost answer still ends in an error, and the tokens are
 * passed on in order, once each, or the answer ends in `answer_lost`.
 */
@Injectable()
export class AnswerRelay implements OnApplicationBootstrap {
  constructor(
    @Inject(GATEWAY_CONFIG) private readonly config: GatewayConfig,
    @Inject(INSTANCE_ID) private readonly instanceId: string,
    @InjectPinoLogger(AnswerRelay.name) private readonly logger: PinoLogger,
    private readonly registry: SessionRegistry,
    private readonly sessions: SessionRepository,
    private readonly ai: AiClient,
    private readonly breaker: BreakerService,
    private readonly metrics: MetricsService,
    private readonly control: ControlChannel,
    private readonly queued: QueuedQuestions,
  ) {}

  onApplicationBootstrap(): void {
    this.ai.handleUnclaimed((r) => this.unclaimed(r));
    this.control.on('asked', (m) => this.track(m.sessionId, m.messageId, { deadline: m.deadline, acceptedAt: m.acceptedAt, queue: m.queue }));
  }

  /**
   * A question was accepted for a session held by `owner`: this instance watches its answer, or
   * tells the owner, which then does. Told until it got the word (or the deadline passed).
   */
  accepted(owner: string, sessionId: string, messageId: string, q: AcceptedQuestion): void {
    this.registry.touch(sessionId);
    if (owner === this.instanceId) {
      this.track(sessionId, messageId, q);
      return;
    }
    const { deadline, acceptedAt, queue } = q;
    void this.control.deliver(owner, { type: 'asked', sessionId, messageId, deadline, acceptedAt, ...(queue ? { queue } : {}) }, deadline).then((told) => {
      if (!told) this.logger.warn({ sessionId, messageId, owner }, 'the instance holding the session could not be told of its question');
    });
  }

  /** A question its client was told was refused, although it may have been queued: none of it is relayed. */
  refused(messageId: string): void {
    this.ai.forget(messageId);
  }

  /** Watches the answer of an accepted question on a session held here, until done, error or its deadline. */
  private track(sessionId: string, messageId: string, { deadline, acceptedAt, queue }: AcceptedQuestion): void {
    const s = this.registry.get(sessionId);
    if (!s) return;
    // Before the answer is watched: kept replies may be delivered as it subscribes, and `queued` comes first.
    if (queue && s.inflight?.messageId !== messageId && s.lastEnded !== messageId) this.queued.track(sessionId, messageId, queue);
    // Accepted here and announced over the control channel too: whichever comes second is a no-op.
    if (s.inflight?.messageId === messageId) {
      s.inflight.deadline = Math.min(s.inflight.deadline, deadline);
      return;
    }
    if (s.lastEnded === messageId) return;
    s.inflight?.answer?.unsubscribe();
    // From an instance that did not say, the deadline tells when it was accepted (every instance has the same setting).
    const inflight: Inflight = { messageId, deadline, acceptedAt: acceptedAt ?? deadline - this.config.QUESTION_DEADLINE_MS, lastSeq: -1 };
    s.inflight = inflight;
    const stop = this.ai.watchAnswer(
      { messageId, timeoutMs: deadline + ANSWER_GRACE_MS - Date.now() },
      {
        next: (r) => this.onReply(s, inflight, r),
        error: (err: unknown) => {
          if (err instanceof AnswerTimeoutError) this.lost(s, inflight, 'deadline_exceeded', 'No answer arrived before the deadline.');
          else this.logger.warn({ err: String(err), sessionId, messageId }, 'answer watch failed');
        },
      },
    );
    inflight.answer = { unsubscribe: stop };
  }

  /**
   * A reply nobody watches yet: kept (for a while) when its session is here, since the word that
   * the question was accepted may still be on its way; it is never relayed without that word.
   */
  private unclaimed(reply: Reply): boolean {
    if (reply.sessionId === PROBE_SESSION) return false;
    const s = this.registry.get(reply.sessionId);
    if (!s || s.lastEnded === reply.messageId) {
      this.metrics.orphanReplies.inc();
      return false;
    }
    return true;
  }

  private onReply(s: LocalSession, inflight: Inflight, reply: Reply): void {
    const sessionId = s.record.sessionId;
    if (s.inflight !== inflight) return;
    this.metrics.countReply(reply.type);
    s.lastActivity = Date.now();
    if (reply.type === 'token') {
      // A question re-answered after a worker restart starts again at seq 0: the client already
      // has those tokens. A token past the next one means some were lost on the way.
      if (reply.seq <= inflight.lastSeq) return;
      if (reply.seq > inflight.lastSeq + 1) return this.incomplete(s, inflight);
      if (inflight.lastSeq < 0) this.metrics.answerTtft.observe((Date.now() - inflight.acceptedAt) / 1000);
      inflight.lastSeq = reply.seq;
      this.registry.emit(sessionId, 'token', { messageId: inflight.messageId, seq: reply.seq, text: reply.text });
      return;
    }
    if (reply.type === 'done' && reply.tokens !== inflight.lastSeq + 1) return this.incomplete(s, inflight);
    this.finish(s, inflight, reply.type === 'done' ? 'done' : reply.code);
    if (reply.type === 'done') this.registry.emit(sessionId, 'done', { messageId: inflight.messageId, tokens: reply.tokens, ...(reply.usage ? { usage: reply.usage } : {}) });
    else this.registry.emit(sessionId, 'failed', { messageId: inflight.messageId, code: reply.code, message: reply.message });
    this.logger.debug({ sessionId, messageId: inflight.messageId, outcome: reply.type }, 'answer finished');
  }

  /** Tokens were lost on the way (a reply subscriber reconnected): the client hears so, the worker stops. */
  private incomplete(s: LocalSession, inflight: Inflight): void {
    inflight.answer?.unsubscribe();
    this.lost(s, inflight, 'answer_lost', 'Part of the answer was lost on the way; ask again.');
  }

  /** No done or error by the deadline (a worker died with it), or a broken answer: the client hears so. */
  private lost(s: LocalSession, inflight: Inflight, code: string, message: string): void {
    if (s.inflight !== inflight) return;
    this.finish(s, inflight, code === 'deadline_exceeded' ? 'lost' : code);
    this.registry.emit(s.record.sessionId, 'failed', { messageId: inflight.messageId, code, message });
    this.metrics.answersLost.inc();
    if (code === 'deadline_exceeded') this.breaker.recordTimeout();
    this.logger.warn({ sessionId: s.record.sessionId, messageId: inflight.messageId, code }, 'answer lost');
  }

  /**
   * The answer ended. The session is freed for its next question before the client hears so: the
   * release goes on the wire first, so a client that asks again at once (possibly through another
   * instance) does not race it and get 409 question_in_flight.
   */
  private finish(s: LocalSession, inflight: Inflight, outcome: string): void {
    void this.sessions.release(s.record.sessionId, inflight.messageId).catch((err: unknown) => {
      this.logger.warn({ err: String(err), sessionId: s.record.sessionId }, 'in-flight release failed; it expires by TTL');
    });
    this.metrics.answerDuration.observe({ outcome }, (Date.now() - inflight.acceptedAt) / 1000);
    s.inflight = undefined;
    s.lastEnded = inflight.messageId;
  }
}
