import { Inject, Injectable } from '@nestjs/common';
import type { Redis } from 'ioredis';
import { REDIS_COMMANDS } from '../common/redis/redis.module';

/** How long an ended session's entry answers a reconnect (204, or a new session after a drain). */
export const TOMBSTONE_MS = 60_000;

/** The entry of a resume handle, by the handle's hash (sessions.repository writes it with the session). */
export const resumeKey = (handleHash: string) => `td:resume:{${handleHash}}`;

/** What a resume handle leads to. */
export interface ResumeEntry {
  sessionId: string;
  /** The instance holding the session (the dam slot, the answers, the events). */
  home: string;
  userId: string | null;
  /** Set once the session ended, with why (`idle`, `lifetime`, `draining`, `deleted`, `client`, ...). */
  ended: string | null;
}

/**
 * Resume entries in Redis: a reconnect on any instance finds the session's instance, and after
 * the end, for TOMBSTONE_MS, why it ended (a tombstone), so every instance answers it alike.
 */
@Injectable()
export class ResumeRepository {
  constructor(@Inject(REDIS_COMMANDS) private readonly redis: Redis) {}

  async lookup(handleHash: string): Promise<ResumeEntry | null> {
    const h = await this.redis.hgetall(resumeKey(handleHash));
    if (!h['sessionId'] || !h['home']) return null;
    return { sessionId: h['sessionId'], home: h['home'], userId: h['userId'] || null, ended: h['ended'] || null };
  }

  /** Marks the sessions ended, in one pipeline; only those whose entry exists. */
  async tombstone(ends: Array<{ handleHash: string; reason: string }>): Promise<void> {
    const p = this.redis.pipeline();
    for (const e of ends) {
      const key = resumeKey(e.handleHash);
      // Only an existing entry: a late tombstone must not make one up without its session.
      p.eval("if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSET', KEYS[1], 'ended', ARGV[1]); redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 1", 1, key, e.reason, TOMBSTONE_MS);
    }
    const results = (await p.exec()) ?? [];
    const failed = results.find(([err]) => err);
    if (failed?.[0]) throw failed[0];
  }
}
