import { Body, Controller, Delete, Get, HttpCode, Inject, Param, Post, Req, Res, UseGuards, UseInterceptors } from '@nestjs/common';
import type { Request, Response } from 'express';
import { BreakerGuard } from '../ai/breaker.guard';
import { GATEWAY_CONFIG, type GatewayConfig } from '../common/config/config';
import { ErrorCode, GatewayException, rateLimitHeaders } from '../common/errors';
import { SESSION_ID, parseBearer, parseQuestionBody } from '../questions/question-body';
import { QuestionsService } from '../questions/questions.service';
import { DrainingGuard } from '../sessions/draining.guard';
import { SessionsService } from '../sessions/sessions.service';
import { requestedWaitMs } from '../sessions/waiting-room';
import type { Credentials } from '../dam/identity';
import { parseEventId } from '../resume/resume-id';
import { ResumeService } from '../resume/resume.service';
import { TicketsService } from '../tickets/tickets.service';
import { FINAL_EVENT_ID, REFUSAL_AS_EVENT, endWithRefusalEvent, sendRefusalEvent } from './refusal-event';
import { JsonBodyInterceptor } from './json-body.interceptor';
import { SseConnection, SsePinger } from './sse-connection';

/** The HTTP face of the session core: open an SSE stream, ask, close. Nothing here but HTTP. */
@Controller('chat')
export class ChatController {
  constructor(
    @Inject(GATEWAY_CONFIG) private readonly config: GatewayConfig,
    private readonly sessions: SessionsService,
    private readonly questions: QuestionsService,
    private readonly pinger: SsePinger,
    private readonly tickets: TicketsService,
    private readonly resume: ResumeService,
  ) {}

  @Get('stream')
  @UseGuards(DrainingGuard)
  async stream(@Req() req: Request, @Res() res: Response): Promise<void> {
    if (req.headers['last-event-id'] === FINAL_EVENT_ID) {
      res.status(204).end();
      return;
    }
    const connection = new SseConnection(req, res, this.pinger);
    try {
      let credentials: Credentials | null = null;
      // EventSource's reconnect: the same URL (its ticket spent) and the id of the last event it has.
      const point = parseEventId(req.header('last-event-id'));
      if (point) {
        const r = await this.resume.resume(point, connection);
        if (r.kind === 'resumed') return;
        if (r.kind === 'ended') {
          if (!res.headersSent) res.status(204).end();
          return;
        }
        // Drained: a new session for whom the old one was (a JWT or ticket proved it then).
        credentials = r.userId ? { headers: {}, ip: req.ip, verified: { userId: r.userId, claims: {} } } : { headers: req.headers, ip: req.ip };
      }
      // ?wait=N or Prefer: wait=N: a full budget opens the stream at once, in the line.
      const waitMs = requestedWaitMs(req.query['wait'], req.headers.prefer);
      const admission = await this.sessions.admit(credentials ?? (await this.credentials(req)), connection, waitMs);
      if (admission) await this.sessions.start(admission, connection);
    } catch (err) {
      // A stream that waited in the line is open: its refusal can only be an event.
      if (res.headersSent) return endWithRefusalEvent(res, err);
      // Asked for (?refusal=event): the refusal comes as an event a browser can read.
      if (req.query['refusal'] !== REFUSAL_AS_EVENT) throw err;
      sendRefusalEvent(res, err);
    }
  }

  /** Who opens the stream: a stream ticket (?ticket=, what a browser can send) or the request's own headers. */
  private async credentials(req: Request): Promise<Credentials> {
    const ticket = req.query['ticket'];
    if (ticket === undefined) return req;
    const verified = await this.tickets.redeem(typeof ticket === 'string' ? ticket : '');
    return { headers: {}, ip: req.ip, verified };
  }

  @Post('sessions/:sessionId/messages')
  @HttpCode(202)
  @UseGuards(BreakerGuard)
  @UseInterceptors(JsonBodyInterceptor)
  async ask(
    @Param('sessionId') sessionId: string,
    @Req() req: Request,
    @Res({ passthrough: true }) res: Response,
    @Body() body: unknown,
  ): Promise<{ messageId: string }> {
    const token = requireToken(req.headers.authorization);
    if (!req.is('application/json')) {
      throw new GatewayException(ErrorCode.UnsupportedMediaType, 'Send the question as application/json.');
    }
    if (!SESSION_ID.test(sessionId)) throw new GatewayException(ErrorCode.SessionNotFound, 'No open session with this id.');
    const question = parseQuestionBody(body, this.config.QUESTION_MAX_CHARS);
    // Prefer: wait=N (or ?wait=N): the question may wait that long in the AI queue, hearing its place.
    const waitMs = requestedWaitMs(req.query['wait'], req.headers.prefer);
    const { messageId, rateLimit } = await this.questions.ask({ via: 'http', sessionId, token, question, traceId: String(req.id ?? ''), waitMs });
    if (rateLimit) for (const [k, v] of Object.entries(rateLimitHeaders(rateLimit))) res.setHeader(k, v);
    return { messageId };
  }

  @Delete('sessions/:sessionId')
  @HttpCode(204)
  async close(@Param('sessionId') sessionId: string, @Req() req: Request): Promise<void> {
    const token = requireToken(req.headers.authorization);
    if (!SESSION_ID.test(sessionId)) throw new GatewayException(ErrorCode.SessionNotFound, 'No open session with this id.');
    await this.sessions.close(sessionId, token);
  }
}

function requireToken(authorization: string | undefined): string {
  const token = parseBearer(authorization);
  if (token === null) {
    throw new GatewayException(ErrorCode.MissingToken, 'Send the token from the session event as "Authorization: Bearer <token>".');
  }
  return token;
}
