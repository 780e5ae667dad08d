import { createHash } from 'node:crypto';
import { Inject, Injectable } from '@nestjs/common';
import type { Redis } from 'ioredis';
import { REDIS_COMMANDS } from '../common/redis/redis.module';
import { AUTHORIZE_LUA, CLAIM_LUA, DRAIN_LUA, RELEASE_LUA, REMOVE_LUA } from './session.scripts';

export type ClaimStatus = 'ok' | 'not_found' | 'forbidden' | 'busy' | 'draining';

export interface ClaimResult {
  status: ClaimStatus;
  /** Instance holding the session's stream (empty when not found or forbidden). */
  ownerInstanceId: string;
  /** The identity per-user limits apply to, or null. */
  userId: string | null;
}

export interface NewSession {
  sessionId: string;
  token: string;
  instanceId: string;
  userId: string | null;
  createdAt: number;
  expiresAt: number;
}

interface SessionCommands {
  tdClaim(session: string, inflight: string, tokenHash: string, messageId: string, ttlMs: number): Promise<[string, string, string]>;
  tdAuthorize(session: string, tokenHash: string): Promise<[string, string]>;
  tdRelease(inflight: string, messageId: string): Promise<number>;
  tdRemove(session: string, inflight: string): Promise<string | null>;
  tdDrain(session: string, inflight: string): Promise<string | null>;
}

export function hashToken(token: string): string {
  return createHash('sha256').update(token).digest('base64url');
}

const keys = {
  session: (id: string) => `td:session:{${id}}`,
  inflight: (id: string) => `td:session:{${id}}:inflight`,
  control: (instanceId: string) => `td:control:${instanceId}`,
};

export const controlChannel = keys.control;

/** Sessions live in Redis so that any instance can authorize a POST for a stream held by another. */
@Injectable()
export class SessionRepository {
  private readonly redis: Redis & SessionCommands;

  constructor(@Inject(REDIS_COMMANDS) redis: Redis) {
    redis.defineCommand('tdClaim', { numberOfKeys: 2, lua: CLAIM_LUA });
    redis.defineCommand('tdAuthorize', { numberOfKeys: 1, lua: AUTHORIZE_LUA });
    redis.defineCommand('tdRelease', { numberOfKeys: 1, lua: RELEASE_LUA });
    redis.defineCommand('tdRemove', { numberOfKeys: 2, lua: REMOVE_LUA });
    redis.defineCommand('tdDrain', { numberOfKeys: 2, lua: DRAIN_LUA });
    this.redis = redis as Redis & SessionCommands;
  }

  /** Stores only the token's hash: a Redis dump must not hand out sessions. */
  async create(s: NewSession): Promise<void> {
    await this.redis
      .multi()
      .hset(keys.session(s.sessionId), {
        tokenHash: hashToken(s.token),
        instanceId: s.instanceId,
        userId: s.userId ?? '',
        createdAt: String(s.createdAt),
        expiresAt: String(s.expiresAt),
      })
      .pexpireat(keys.session(s.sessionId), s.expiresAt)
      .exec();
  }

  async claim(sessionId: string, token: string, messageId: string, ttlMs: number): Promise<ClaimResult> {
    const [status, owner, userId] = await this.redis.tdClaim(
      keys.session(sessionId),
      keys.inflight(sessionId),
      hashToken(token),
      messageId,
      ttlMs,
    );
    return { status: status as ClaimStatus, ownerInstanceId: owner, userId: userId === '' ? null : userId };
  }

  async authorize(sessionId: string, token: string): Promise<ClaimResult> {
    const [status, owner] = await this.redis.tdAuthorize(keys.session(sessionId), hashToken(token));
    return { status: status as ClaimStatus, ownerInstanceId: owner, userId: null };
  }

  async release(sessionId: string, messageId: string): Promise<boolean> {
    return (await this.redis.tdRelease(keys.inflight(sessionId), messageId)) === 1;
  }

  /** Deletes the session; returns the id of the question that was in flight, if any. */
  async remove(sessionId: string): Promise<string | null> {
    return this.redis.tdRemove(keys.session(sessionId), keys.inflight(sessionId));
  }

  /**
   * Marks sessions as draining (no new question from any instance) and returns, per session, the
   * question still in flight or null. One script per session (one slot each), one pipeline.
   */
  async markDraining(sessionIds: string[]): Promise<Map<string, string | null>> {
    const out = new Map<string, string | null>();
    if (sessionIds.length === 0) return out;
    const p = this.redis.pipeline();
    // On a pipeline the script only queues; the replies come from exec().
    const queue = p as unknown as { tdDrain(session: string, inflight: string): unknown };
    for (const id of sessionIds) queue.tdDrain(keys.session(id), keys.inflight(id));
    const results = (await p.exec()) ?? [];
    sessionIds.forEach((id, i) => {
      const [err, v] = results[i] ?? [new Error('no reply'), null];
      if (err) throw err;
      out.set(id, typeof v === 'string' ? v : null);
    });
    return out;
  }

  /** Tells the instance that holds a stream which question is in flight, so it can watch the deadline. */
  async tellAsked(ownerInstanceId: string, sessionId: string, messageId: string, deadline: number): Promise<void> {
    await this.redis.publish(keys.control(ownerInstanceId), JSON.stringify({ type: 'asked', sessionId, messageId, deadline }));
  }

  /** Asks the instance that holds a stream to close it. */
  async requestClose(ownerInstanceId: string, sessionId: string): Promise<void> {
    await this.redis.publish(keys.control(ownerInstanceId), JSON.stringify({ type: 'close', sessionId }));
  }
}
