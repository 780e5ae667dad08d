import { Controller, HttpCode, Post, Req } from '@nestjs/common';
import type { Request } from 'express';
import { TicketsService, type Ticket } from './tickets.service';

@Controller('chat')
export class TicketsController {
  constructor(private readonly tickets: TicketsService) {}

  /** A stream ticket for the holder of the JWT in `Authorization: Bearer <jwt>`. */
  @Post('tickets')
  @HttpCode(201)
  async issue(@Req() req: Request): Promise<Ticket> {
    return this.tickets.issue(req.headers.authorization);
  }
}
