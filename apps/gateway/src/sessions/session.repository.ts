import { createHash } from 'node:crypto';
import { Inject, Injectable } from '@nestjs/common';
import type { Redis } from 'ioredis';
import { REDIS_COMMANDS } from '../common/redis/redis.module';
import { TOMBSTONE_MS, resumeKey } from '../resume/resume.repository';
import type { Transport } from './session-events';
import { authorizeSession, claimInflight, markDraining, releaseInflight, removeSession } from './session.lua';

export type ClaimStatus = 'ok' | 'not_found' | 'forbidden' | 'busy' | 'draining';

export interface ClaimResult {
  status: ClaimStatus;
  /** Instance holding the session's connection (empty when not found or forbidden). */
  ownerInstanceId: string;
  /** The identity per-user limits apply to, or null. */
  userId: string | null;
}

export interface AuthorizeResult {
  status: Exclude<ClaimStatus, 'busy' | 'draining'>;
  ownerInstanceId: string;
  transport: Transport;
}

/** A session as stored: who holds it, whose it is, until when. */
export interface SessionRecord {
  sessionId: string;
  token: string;
  instanceId: string;
  transport: Transport;
  userId: string | null;
  createdAt: number;
  expiresAt: number;
  /** SHA-256 of the resume handle of a resumable session (its entry is written with it). */
  resumeHash?: string;
}

export function hashToken(token: string): string {
  return createHash('sha256').update(token).digest('base64url');
}

const keys = {
  session: (id: string) => `td:session:{${id}}`,
  inflight: (id: string) => `td:session:{${id}}:inflight`,
};

const both = (id: string): [string, string] => [keys.session(id), keys.inflight(id)];

/** Sessions live in Redis so that any instance can authorize a question for a session held by another. */
@Injectable()
export class SessionRepository {
  constructor(@Inject(REDIS_COMMANDS) private readonly redis: Redis) {}

  /** Stores only the token's hash: a Redis dump must not hand out sessions. With it, the resume entry (another slot). */
  async create(s: SessionRecord): Promise<void> {
    const session = this.redis
      .multi()
      .hset(keys.session(s.sessionId), {
        tokenHash: hashToken(s.token),
        instanceId: s.instanceId,
        transport: s.transport,
        userId: s.userId ?? '',
        createdAt: String(s.createdAt),
        expiresAt: String(s.expiresAt),
      })
      .pexpireat(keys.session(s.sessionId), s.expiresAt)
      .exec();
    const resume = s.resumeHash
      ? this.redis
          .multi()
          .hset(resumeKey(s.resumeHash), { sessionId: s.sessionId, home: s.instanceId, userId: s.userId ?? '' })
          .pexpireat(resumeKey(s.resumeHash), s.expiresAt + TOMBSTONE_MS)
          .exec()
      : null;
    // Both awaited, so neither can fail unheard.
    await Promise.all([session, resume]);
  }

  async claim(sessionId: string, token: string, messageId: string, ttlMs: number): Promise<ClaimResult> {
    const [status, owner, userId] = await claimInflight(this.redis, both(sessionId), [hashToken(token), messageId, ttlMs]);
    return { status: status as ClaimStatus, ownerInstanceId: owner, userId: userId === '' ? null : userId };
  }

  async authorize(sessionId: string, token: string): Promise<AuthorizeResult> {
    const [status, owner, transport] = await authorizeSession(this.redis, [keys.session(sessionId)], [hashToken(token)]);
    return { status: status as AuthorizeResult['status'], ownerInstanceId: owner, transport: transport as Transport };
  }

  async release(sessionId: string, messageId: string): Promise<boolean> {
    return (await releaseInflight(this.redis, [keys.inflight(sessionId)], [messageId])) === 1;
  }

  /** Deletes the session; returns the id of the question that was in flight, if any. */
  async remove(sessionId: string): Promise<string | null> {
    return removeSession(this.redis, both(sessionId), []);
  }

  /**
   * Deletes sessions in one pipeline. Per session: the question that was in flight (or null), or
   * the error of that one command.
   */
  async removeMany(sessionIds: string[]): Promise<Array<{ inflight: string | null } | { err: Error }>> {
    const p = this.redis.pipeline();
    for (const id of sessionIds) removeSession.queue(p, both(id), []);
    const results = (await p.exec()) ?? [];
    return sessionIds.map((_, i) => {
      const [err, v] = results[i] ?? [new Error('no reply'), null];
      return err ? { err } : { inflight: typeof v === 'string' ? v : null };
    });
  }

  /**
   * Marks sessions as draining (no new question from any instance) and returns, per session, the
   * question still in flight or null. One script per session (one slot each), one pipeline.
   */
  async markDraining(sessionIds: string[]): Promise<Map<string, string | null>> {
    const out = new Map<string, string | null>();
    if (sessionIds.length === 0) return out;
    const p = this.redis.pipeline();
    for (const id of sessionIds) markDraining.queue(p, both(id), []);
    const results = (await p.exec()) ?? [];
    sessionIds.forEach((id, i) => {
      const [err, v] = results[i] ?? [new Error('no reply'), null];
      if (err) throw err;
      out.set(id, typeof v === 'string' ? v : null);
    });
    return out;
  }
}
