import { Inject, UseFilters, UseGuards } from '@nestjs/common';
import { ConnectedSocket, MessageBody, SubscribeMessage, WebSocketGateway, type OnGatewayConnection, type OnGatewayInit } from '@nestjs/websockets';
import type { Namespace, Socket } from 'socket.io';
import { BreakerGuard } from '../ai/breaker.guard';
import { GATEWAY_CONFIG, type GatewayConfig } from '../common/config/config';
import { ErrorCode, GatewayException } from '../common/errors';
import { parseQuestionBody } from '../questions/question-body';
import { QuestionsService } from '../questions/questions.service';
import { SessionsService } from '../sessions/sessions.service';
import { SocketAdmission } from './socket-admission';
import { SocketConnection, roomOf } from './socket-connection';
import { SocketProblemFilter } from './socket-problem.filter';

/**
 * The Socket.IO face of the session core, namespace /chat: connect opens a session (the `session`
 * event follows), `ask` {question} is acknowledged with {messageId} or a problem, and the answer
 * comes as `token`, `done`, `failed`; `expired` ends the session. Payloads as over SSE.
 */
@WebSocketGateway({ namespace: '/chat' })
@UseFilters(SocketProblemFilter)
export class ChatGateway implements OnGatewayInit<Namespace>, OnGatewayConnection<Socket> {
  constructor(
    @Inject(GATEWAY_CONFIG) private readonly config: GatewayConfig,
    private readonly sessions: SessionsService,
    private readonly questions: QuestionsService,
    private readonly admission: SocketAdmission,
  ) {}

  afterInit(nsp: Namespace): void {
    nsp.use(this.admission.middleware);
    // A DELETE that landed on another instance reaches the socket through the Redis adapter.
    this.sessions.registerReach('socketio', {
      closeRemote: async (_owner, sessionId) => {
        nsp.in(roomOf(sessionId)).disconnectSockets(true);
      },
    });
  }

  handleConnection(socket: Socket): void {
    const connection = SocketConnection.of(socket);
    const admission = connection?.take();
    if (!connection || !admission) {
      socket.disconnect(true);
      return;
    }
    connection.started = this.sessions.start(admission, connection).then(
      (session) => {
        if (session) void socket.join(roomOf(session.record.sessionId));
        return session;
      },
      () => {
        socket.disconnect(true);
        return null;
      },
    );
  }

  @SubscribeMessage('ask')
  @UseGuards(BreakerGuard)
  async ask(@ConnectedSocket() socket: Socket, @MessageBody() body: unknown): Promise<{ messageId: string }> {
    const session = await SocketConnection.of(socket)?.started;
    if (!session) throw new GatewayException(ErrorCode.SessionNotFound, 'This connection has no open session.');
    const question = parseQuestionBody(body, this.config.QUESTION_MAX_CHARS);
    const { sessionId, token } = session.record;
    const { messageId } = await this.questions.ask({ via: 'socketio', sessionId, token, question, traceId: socket.id });
    return { messageId };
  }
}
