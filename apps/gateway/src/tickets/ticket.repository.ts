import { Inject, Injectable } from '@nestjs/common';
import type { Redis } from 'ioredis';
import { REDIS_COMMANDS } from '../common/redis/redis.module';
import type { VerifiedIdentity } from '../dam/identity';

const keyOf = (ticketHash: string) => `td:ticket:${ticketHash}`;

/** Stream tickets in Redis, by the hash of the ticket: a Redis dump hands out no stream. */
@Injectable()
export class TicketRepository {
  constructor(@Inject(REDIS_COMMANDS) private readonly redis: Redis) {}

  async create(ticketHash: string, identity: VerifiedIdentity, ttlMs: number): Promise<void> {
    await this.redis.set(keyOf(ticketHash), JSON.stringify(identity), 'PX', ttlMs);
  }

  /** Takes the ticket: the identity it carries, once; null when unknown, used or expired. */
  async take(ticketHash: string): Promise<VerifiedIdentity | null> {
    const raw = await this.redis.getdel(keyOf(ticketHash));
    if (raw === null) return null;
    const v = JSON.parse(raw) as Partial<VerifiedIdentity>;
    return typeof v.userId === 'string' ? { userId: v.userId, claims: v.claims ?? {} } : null;
  }
}
