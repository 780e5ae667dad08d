import { createHash, randomBytes } from 'node:crypto';
import { Inject, Injectable } from '@nestjs/common';
import { GATEWAY_CONFIG, type GatewayConfig } from '../common/config/config';
import { ErrorCode, GatewayException } from '../common/errors';
import type { AdaptiveDeadline } from '../common/redis/adaptive-deadline';
import { RedisFailures } from '../common/redis/redis-failures';
import { REQUEST_DEADLINE } from '../common/redis/redis.module';
import { DamService } from '../dam/dam.service';
import type { VerifiedIdentity } from '../dam/identity';
import { TicketRepository } from './ticket.repository';

export interface Ticket {
  ticket: string;
  /** Epoch ms after which it is refused. */
  expiresAt: number;
}

/** Tickets look like this (base64url of 32 random bytes); anything else is refused without a lookup. */
const TICKET = /^[A-Za-z0-9_-]{43}$/;

const hashOf = (ticket: string) => createHash('sha256').update(ticket).digest('base64url');

/**
 * Short-lived, single-use stream tickets: EventSource cannot send an Authorization header, so a
 * page trades its JWT (POST /chat/tickets) for a ticket it may put in the stream's URL. The ticket
 * carries the identity the JWT proved; only its hash is stored, and taking it deletes it.
 */
@Injectable()
export class TicketsService {
  constructor(
    @Inject(GATEWAY_CONFIG) private readonly config: GatewayConfig,
    @Inject(REQUEST_DEADLINE) private readonly deadline: AdaptiveDeadline,
    private readonly repository: TicketRepository,
    private readonly dam: DamService,
    private readonly failures: RedisFailures,
  ) {}

  async issue(authorization: string | undefined): Promise<Ticket> {
    if (!this.dam.verifiesJwt) {
      throw new GatewayException(ErrorCode.TicketsDisabled, 'Stream tickets exist only with AUTH_JWT_SECRET; open the stream without one.');
    }
    const identity = this.dam.verifyJwt(authorization);
    const ticket = randomBytes(32).toString('base64url');
    const ttlMs = this.config.STREAM_TICKET_TTL_MS;
    const expiresAt = Date.now() + ttlMs;
    await this.deadline.run(this.repository.create(hashOf(ticket), identity, ttlMs)).catch((err: unknown) => Promise.reject(this.failures.refusal('ticket', err)));
    return { ticket, expiresAt };
  }

  /** The identity of a ticket, which can never be used again; throws invalid_ticket. */
  async redeem(ticket: string): Promise<VerifiedIdentity> {
    if (!TICKET.test(ticket)) throw invalidTicket();
    const identity = await this.deadline.run(this.repository.take(hashOf(ticket))).catch((err: unknown) => Promise.reject(this.failures.refusal('ticket', err)));
    if (identity === null) throw invalidTicket();
    return identity;
  }
}

function invalidTicket(): GatewayException {
  return new GatewayException(ErrorCode.InvalidTicket, 'The stream ticket is unknown, used or expired; get a new one (POST /chat/tickets).');
}
