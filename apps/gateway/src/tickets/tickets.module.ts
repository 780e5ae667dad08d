import { Module } from '@nestjs/common';
import { TicketRepository } from './ticket.repository';
import { TicketsController } from './tickets.controller';
import { TicketsService } from './tickets.service';

/** Stream tickets: a JWT traded for a single-use credential a URL may carry (EventSource sends no headers). */
@Module({
  controllers: [TicketsController],
  providers: [TicketsService, TicketRepository],
  exports: [TicketsService],
})
export class TicketsModule {}
