import { Inject, Injectable } from '@nestjs/common';
import type { AdaptiveDeadline } from '../common/redis/adaptive-deadline';
import { RedisFailures } from '../common/redis/redis-failures';
import { REQUEST_DEADLINE } from '../common/redis/redis.module';
import { SessionKeeper } from '../sessions/session-keeper';
import { SessionRepository, type ClaimResult } from '../sessions/session.repository';

/** A session's single in-flight slot, as a question claims and gives it back. */
@Injectable()
export class QuestionClaims {
  constructor(
    @Inject(REQUEST_DEADLINE) private readonly deadline: AdaptiveDeadline,
    private readonly sessions: SessionRepository,
    private readonly keeper: SessionKeeper,
    private readonly failures: RedisFailures,
  ) {}

  /**
   * Checks the token and claims the slot for messageId. A session opened here while Redis was away
   * is written first. A claim that timed out may still run in Redis: the release sent behind it on
   * the same connection undoes it, else the session would answer question_in_flight until the
   * claim's TTL. Throws redis_unavailable when Redis does not answer in time.
   */
  async claim(sessionId: string, token: string, messageId: string, ttlMs: number): Promise<ClaimResult> {
    const once = () =>
      this.deadline.run(this.sessions.claim(sessionId, token, messageId, ttlMs)).catch((err: unknown) => {
        this.release(sessionId, messageId);
        throw err;
      });
    try {
      let claim = await once();
      if (claim.status === 'not_found' && (await this.keeper.persistIfLocal(sessionId))) claim = await once();
      return claim;
    } catch (err) {
      throw this.failures.refusal('claim', err);
    }
  }

  /** Gives the slot back if it still holds this message; a failure leaves it to the claim's TTL. */
  release(sessionId: string, messageId: string): void {
    void this.sessions.release(sessionId, messageId).catch(() => undefined);
  }
}
