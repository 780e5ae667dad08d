import { randomUUID } from 'node:crypto';
import { Inject, Injectable } from '@nestjs/common';
import { InjectPinoLogger, PinoLogger } from 'nestjs-pino';
import { EnqueueUnknownError, protocolKeys, type Question } from '@traffic-dam/ai-bridge';
import { AiCapacityService } from '../ai/ai-capacity.service';
import { AnswerRelay } from '../answers/answer-relay.service';
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
    // Before any Redis round trip: under overload most questions end here, at no cost.
    this.refuseIfKnownOverloaded(q.via);
    const messageId = randomUUID();
    const deadline = Date.now() + this.config.QUESTION_DEADLINE_MS;
    const claim = await this.claims.claim(q.sessionId, q.token, messageId, this.config.QUESTION_DEADLINE_MS + INFLIGHT_SLACK_MS).catch((err: unknown) => {
      this.count(q, ErrorCode.RedisUnavailable);
      throw err;
    });
    this.assertClaimed(q, claim);
    let rateLimit: RateLimitInfo | null;
    try {
      // The gate may have refused others while this claim waited in line for Redis.
      this.refuseIfKnownOverloaded(q.via);
      rateLimit = await this.dam.checkQuestionRate(claim.userId).catch((err: unknown) => {
        this.count(q, 'rate_limited');
        throw err;
      });
      // replyTo: the channel of the instance holding the session, wherever the question was posted.
      const replyTo = protocolKeys.replyChannel(claim.ownerInstanceId);
      await this.enqueue(q, { id: messageId, sessionId: q.sessionId, replyTo, question: q.question, deadline, attempt: 1, traceId: q.traceId });
    } catch (err) {
      this.claims.release(q.sessionId, messageId);
      throw err;
    }
    this.count(q, 'accepted');
    this.relay.accepted(claim.ownerInstanceId, q.sessionId, messageId, deadline);
    this.logger.debug({ sessionId: q.sessionId, messageId, owner: claim.ownerInstanceId, via: q.via }, 'question accepted');
    return { messageId, rateLimit };
  }

  private async enqueue(q: AskInput, question: Question): Promise<void> {
    try {
      await this.gate.enqueue(question);
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

  /** Whether ask() refuses a question at once, before any Redis round trip (a known AI overload); counts nothing. */
  get refusesAtOnce(): boolean {
    return this.gate.knownOverloaded;
  }

  /** The first thing ask() does: throws 503 ai_overloaded, counted, while the AI gate's last refusal proves the line too long. */
  refuseIfKnownOverloaded(via: AskInput['via']): void {
    const refusal = this.knownOverloadRefusal(via);
    if (refusal) throw refusal;
  }

  /** The refusal refuseIfKnownOverloaded() throws, counted, or null. A throw costs a stack walk: the fast path takes it as a value. */
  knownOverloadRefusal(via: AskInput['via']): GatewayException | null {
    const refusal = this.gate.knownOverloadRefusal();
    if (refusal) this.count({ via }, ErrorCode.AiOverloaded);
    return refusal;
  }

  private count(q: Pick<AskInput, 'via'>, outcome: string): void {
    this.metrics.questions.inc({ outcome, via: q.via });
  }
}
