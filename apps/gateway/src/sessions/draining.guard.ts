import { Injectable, type CanActivate } from '@nestjs/common';
import { ErrorCode, GatewayException } from '../common/errors';
import { LifecycleService } from '../common/lifecycle.service';

/** Throws draining while this instance shuts down: no new session here, the client connects again elsewhere. */
export function assertNotDraining(lifecycle: LifecycleService): void {
  const refusal = drainingRefusal(lifecycle);
  if (refusal) throw refusal;
}

/** The refusal assertNotDraining() throws, or null. */
export function drainingRefusal(lifecycle: LifecycleService): GatewayException | null {
  return lifecycle.draining ? new GatewayException(ErrorCode.Draining, 'This instance is shutting down; connect again.', { retryAfterSec: 1 }) : null;
}

/** Refuses a new session (GET /chat/stream) while the instance drains; Socket.IO's namespace middleware does the same. */
@Injectable()
export class DrainingGuard implements CanActivate {
  constructor(private readonly lifecycle: LifecycleService) {}

  canActivate(): boolean {
    assertNotDraining(this.lifecycle);
    return true;
  }
}
