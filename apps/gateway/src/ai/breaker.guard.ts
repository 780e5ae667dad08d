import { Injectable, type CanActivate } from '@nestjs/common';
import { BreakerService } from './breaker.service';

/**
 * Refuses a question while the breaker toward the AI is open, before its body is read or its
 * session looked up: the cheapest answer the gateway can give. No Redis round trip. The refusal is
 * a domain error (ai_unavailable); the HTTP filter and the Socket.IO mapper turn it into theirs.
 */
@Injectable()
export class BreakerGuard implements CanActivate {
  constructor(private readonly breaker: BreakerService) {}

  canActivate(): boolean {
    this.breaker.assertClosed();
    return true;
  }
}
