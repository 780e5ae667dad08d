import { Inject, Injectable } from '@nestjs/common';
import type { Socket } from 'socket.io';
import { GATEWAY_CONFIG, type GatewayConfig } from '../common/config/config';
import { LifecycleService } from '../common/lifecycle.service';
import type { Credentials } from '../dam/identity';
import { assertNotDraining } from '../sessions/draining.guard';
import { SessionsService } from '../sessions/sessions.service';
import { requestedWaitMs } from '../sessions/waiting-room';
import { clientAddress } from './client-address';
import { SocketConnection } from './socket-connection';

type Next = (err?: Error) => void;

/**
 * The /chat namespace's middleware: a connect is a session, so the handshake goes through the
 * same checks as GET /chat/stream (draining, identity, the dam's one budget). A refusal is a
 * connect_error whose `data` is the problem (code, retryAfterMs, ...).
 */
@Injectable()
export class SocketAdmission {
  private readonly ip: ReturnType<typeof clientAddress>;

  constructor(
    @Inject(GATEWAY_CONFIG) config: GatewayConfig,
    private readonly lifecycle: LifecycleService,
    private readonly sessions: SessionsService,
  ) {
    this.ip = clientAddress(config.TRUST_PROXY);
  }

  readonly middleware = (socket: Socket, next: Next): void => {
    // Listen for the close first: a client that gives up while the dam answers must free its slot.
    const connection = new SocketConnection(socket).attach();
    connection.connectWith(next);
    try {
      assertNotDraining(this.lifecycle);
    } catch (err) {
      connection.refuse(err);
      return;
    }
    connection.waitMs = this.waitMs(socket);
    this.sessions.admit(this.credentials(socket), connection, connection.waitMs).then(
      // null: the client left while it waited in the line.
      (admission) => admission && connection.hold(admission),
      (err: unknown) => connection.refuse(err),
    );
  };

  /** The wait the handshake offers: `auth.wait` or the query's `wait`, in s (as ?wait= on a stream). */
  private waitMs(socket: Socket): number {
    const auth = (socket.handshake.auth as { wait?: unknown } | undefined)?.wait;
    return requestedWaitMs(auth ?? socket.handshake.query['wait'], undefined);
  }

  /** JWT in `auth.token` (the handshake's), the address as the trusted proxy saw it. */
  private credentials(socket: Socket): Credentials {
    const token = (socket.handshake.auth as { token?: unknown } | undefined)?.token;
    return { headers: { authorization: typeof token === 'string' ? `Bearer ${token}` : undefined }, ip: this.ip(socket.request) };
  }
}
