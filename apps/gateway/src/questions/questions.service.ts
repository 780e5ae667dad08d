import { randomUUID } from 'node:crypto';
import { Inject, Injectable } from '@nestjs/common';
import { InjectPinoLogger, PinoLogger } from 'nestjs-pino';
import { EnqueueUnknownError, protocolKeys, type AskResult, type Question } from '@traffic-dam/ai-bridge';
import { AiCapacityService } from '../ai/ai-capacity.service';
import { AnswerRelay } from '../answers/answer-relay.service';
import type { QueuePlace } from '../answers/queued-questions';
import { GATEWAY_CONFIG, type GatewayConfig } from '../common/config/config';
import { ErrorCode, GatewayException, type RateLimitInfo } from '../common/errors';
import { DamService } from '../dam/dam.service';
import { RedisFailures } from '../common/redis/redis-failures';
import { MetricsService } from '../metrics/metrics.service';
import type { ClaimResult } from '../sessions/session.repository';
import { QuestionClaims } from './question-claims';

/** How long after its deadline a question still holds the session's in-flight slot. */
const INFLIGHT_SLACK_MS = 5_000;

export interface AskInput {
  /** The transport that asks: a POST, or a socket's `ask`. */
  via: 'http' | 'socketio';
  sessionId: string;
  token: string;
  /** Already checked (question-body.ts). */
  question: string;
  traceId: string;
  /** The wait this request offers in the AI queue, in ms (Prefer: wait=N on the POST, the handshake's wait on a socket); 0: none. */
  waitMs?: number;
}

export interface Accepted {
  messageId: string;
  /** The per-user question limit, when one applies (HTTP sends it as RateLimit headers). */
  rateLimit: RateLimitInfo | null;
}

/**
 * Ask, for every transport: claim the session's in-flight slot, the per-user rate, the AI gate,
 * the enqueue. What the client is told is what happened: accepted means queued exactly once, and
 * a refused question never reaches the session's events (see AiClient's enqueue and AnswerRelay).
 */
@Injectable()
export class QuestionsService {
  constructor(
    @Inject(GATEWAY_CONFIG) private readonly config: GatewayConfig,
    @InjectPinoLogger(QuestionsService.name) private readonly logger: PinoLogger,
    private readonly claims: QuestionClaims,
    private readonly dam: DamService,
    private readonly gate: AiCapacityService,
    private readonly relay: AnswerRelay,
    private readonly metrics: MetricsService,
    private readonly failures: RedisFailures,
  ) {}

  async ask(q: AskInput): Promise<Accepted> {
    // Before any Redis round trip: under overload most questions end here, at no cost. The tier is
    // not known yet: judged at the top tier's limit for this request's wait.
    const waitMs = q.waitMs ?? 0;
    this.refuseIfKnownOverloaded(q, this.limitMs(waitMs, null));
    const messageId = randomUUID();
    const acceptedAt = Date.now();
    // The claim outlives the longest deadline a question can get (one that waits, below).
    const claimTtlMs = this.config.QUESTION_DEADLINE_MS + this.config.DAM_QUEUE_MAX_WAIT_MS + INFLIGHT_SLACK_MS;
    const claim = await this.claims.claim(q.sessionId, q.token, messageId, claimTtlMs).catch((err: unknown) => {
      this.count(q, ErrorCode.RedisUnavailable);
      throw err;
    });
    this.assertClaimed(q, claim);
    let rateLimit: RateLimitInfo | null;
    const limitMs = this.limitMs(waitMs, claim.tier);
    // A question that may wait gets that long on top of its deadline: the wait does not eat its answer's time.
    const deadline = acceptedAt + this.config.QUESTION_DEADLINE_MS + (waitMs > 0 ? limitMs : 0);
    let place: QueuePlace | undefined;
    try {
      // The gate may have refused others while this claim waited in line for Redis.
      this.refuseIfKnownOverloaded(q, limitMs);
      rateLimit = await this.dam.checkQuestionRate(claim.userId).catch((err: unknown) => {
        this.count(q, 'rate_limited');
        throw err;
      });
      // replyTo: the channel of the instance holding the session, wherever the question was posted.
      const replyTo = protocolKeys.replyChannel(claim.ownerInstanceId);
      const r = await this.enqueue(q, { id: messageId, sessionId: q.sessionId, replyTo, question: q.question, deadline, attempt: 1, traceId: q.traceId }, limitMs);
      // Behind others, for a client that offered to wait: it hears its place (queued events).
      if (waitMs > 0 && r.status === 'queued' && r.depth > 0 && (r.dequeued ?? -1) >= 0) place = { position: r.depth + 1, dequeued: r.dequeued as number };
    } catch (err) {
      this.claims.release(q.sessionId, messageId);
      throw err;
    }
    this.count(q, 'accepted');
    this.relay.accepted(claim.ownerInstanceId, q.sessionId, messageId, { deadline, acceptedAt, queue: place });
    this.logger.debug({ sessionId: q.sessionId, messageId, owner: claim.ownerInstanceId, via: q.via }, 'question accepted');
    return { messageId, rateLimit };
  }

  /**
   * The AI gate's limit for a question: DAM_MAX_QUEUE_WAIT_MS, or for a client that offered to
   * wait, up to that wait within DAM_QUEUE_MAX_WAIT_MS (the longest wait offered); less the room
   * kept for the tiers above its own. 0: no gate.
   */
  private limitMs(waitMs: number, tier: string | null): number {
    const base = this.config.DAM_MAX_QUEUE_WAIT_MS;
    if (base === 0) return 0;
    const offered = Math.max(base, Math.min(waitMs, this.config.DAM_QUEUE_MAX_WAIT_MS));
    return Math.max(1, Math.floor(offered * this.dam.tiers.aiRoom(tier)));
  }

  private async enqueue(q: AskInput, question: Question, limitMs: number): Promise<AskResult> {
    try {
      return await this.gate.enqueue(question, limitMs);
    } catch (err) {
      if (err instanceof GatewayException) {
        this.count(q, err.code);
        throw err;
      }
      // Not known to be queued: refused, and nothing of it may reach the session.
      if (err instanceof EnqueueUnknownError) this.relay.refused(question.id);
      this.count(q, ErrorCode.RedisUnavailable);
      throw this.failures.refusal('enqueue', err);
    }
  }

  private assertClaimed(q: AskInput, claim: ClaimResult): void {
    switch (claim.status) {
      case 'ok':
        return;
      case 'not_found': {
        // While Redis takes no writes, a session opened on another instance has no record yet:
        // not "gone", so ask again later rather than give it up.
        const failure = this.dam.redisFailure;
        if (failure !== null) {
          this.count(q, ErrorCode.RedisUnavailable);
          throw RedisFailures.unavailable(failure);
        }
        this.count(q, 'session_not_found');
        throw new GatewayException(ErrorCode.SessionNotFound, 'No open session with this id.');
      }
      case 'forbidden':
        this.count(q, 'forbidden');
        throw new GatewayException(ErrorCode.InvalidToken, 'The token does not belong to this session.');
      case 'busy':
        this.count(q, 'in_flight');
        throw new GatewayException(ErrorCode.QuestionInFlight, 'Wait for the current answer to finish (done or error).');
      case 'draining':
        // Its connection ends within the drain's grace period; a new one lands on another instance.
        this.count(q, 'draining');
        throw new GatewayException(ErrorCode.Draining, "This session's instance is shutting down; open a new stream and ask there.", {
          retryAfterSec: 1,
        });
    }
  }

  /**
   * Whether ask() refuses a question that does not wait at once, before any Redis round trip (a
   * known AI overload); counts nothing.
   */
  get refusesAtOnce(): boolean {
    return this.gate.knownOverloaded(this.limitMs(0, null));
  }

  /** Throws 503 ai_overloaded, counted, while the AI gate's last refusal proves the line too long for limitMs. */
  private refuseIfKnownOverloaded(q: Pick<AskInput, 'via'>, limitMs: number): void {
    const refusal = this.knownOverloadRefusal(q.via, limitMs);
    if (refusal) throw refusal;
  }

  /**
   * The refusal ask() starts with, counted, or null; for a question that does not wait by default
   * (its tier not known yet: judged at the top tier's limit). A throw costs a stack walk: the fast
   * path takes it as a value.
   */
  knownOverloadRefusal(via: AskInput['via'], limitMs: number = this.limitMs(0, null)): GatewayException | null {
    const refusal = this.gate.knownOverloadRefusal(limitMs);
    if (refusal) this.count({ via }, ErrorCode.AiOverloaded);
    return refusal;
  }

  private count(q: Pick<AskInput, 'via'>, outcome: string): void {
    this.metrics.questions.series({ outcome, via: q.via }).inc();
  }
}
