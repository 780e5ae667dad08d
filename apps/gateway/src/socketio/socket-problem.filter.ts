import { Catch, Logger, type ArgumentsHost, type WsExceptionFilter } from '@nestjs/common';
import type { Socket } from 'socket.io';
import { ErrorCode, toSocketProblem } from '../common/errors';

/**
 * The Socket.IO edge for events: a refused `ask` (or an unexpected error) is answered through the
 * event's acknowledgement, as a problem with the same code as over HTTP.
 */
@Catch()
export class SocketProblemFilter implements WsExceptionFilter {
  private readonly logger = new Logger('SocketProblemFilter');

  catch(exception: unknown, host: ArgumentsHost): void {
    const problem = toSocketProblem(exception);
    if (problem.code === ErrorCode.Internal) this.logger.error({ err: exception }, 'unhandled error in a Socket.IO event');
    const ack = host.getArgByIndex<unknown>(2);
    if (typeof ack === 'function') (ack as (p: unknown) => void)(problem);
    else host.switchToWs().getClient<Socket>().emit('problem', problem);
  }
}
