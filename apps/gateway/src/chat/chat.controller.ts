import { Body, Controller, Delete, Get, HttpCode, Param, Post, Req, Res } from '@nestjs/common';
import type { Request, Response } from 'express';
import { ErrorCode, GatewayException } from '../common/errors';
import { ChatService } from './chat.service';

// Session ids are UUIDs we minted; anything else cannot be a session.
const SESSION_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

function requestId(req: Request): string {
  return String(req.id ?? '');
}

@Controller('chat')
export class ChatController {
  constructor(private readonly chat: ChatService) {}

  @Get('stream')
  async stream(@Req() req: Request, @Res() res: Response): Promise<void> {
    await this.chat.openStream(req, res);
  }

  @Post('sessions/:sessionId/messages')
  @HttpCode(202)
  async ask(
    @Param('sessionId') sessionId: string,
    @Req() req: Request,
    @Res({ passthrough: true }) res: Response,
    @Body() body: unknown,
  ): Promise<{ messageId: string }> {
    const authorization = req.headers.authorization;
    this.chat.assertToken(authorization);
    if (!req.is('application/json')) {
      throw new GatewayException(ErrorCode.UnsupportedMediaType, 'Send the question as application/json.');
    }
    if (!SESSION_ID.test(sessionId)) {
      throw new GatewayException(ErrorCode.SessionNotFound, 'No open session with this id.');
    }
    const { messageId, headers } = await this.chat.ask(sessionId, authorization, body, requestId(req));
    for (const [k, v] of Object.entries(headers)) res.setHeader(k, v);
    return { messageId };
  }

  @Delete('sessions/:sessionId')
  @HttpCode(204)
  async close(@Param('sessionId') sessionId: string, @Req() req: Request): Promise<void> {
    if (!SESSION_ID.test(sessionId)) {
      this.chat.assertToken(req.headers.authorization);
      throw new GatewayException(ErrorCode.SessionNotFound, 'No open session with this id.');
    }
    await this.chat.close(sessionId, req.headers.authorization);
  }
}
