import { Catch, Logger, type ArgumentsHost, type ExceptionFilter } from '@nestjs/common';
import type { Request, Response } from 'express';
import { redactUrl } from '../redact-url';
import { ErrorCode } from './error-code';
import { toProblem } from './problem';
import { sendProblem } from './send-problem';

@Catch()
export class ProblemFilter implements ExceptionFilter {
  private readonly logger = new Logger('ProblemFilter');

  catch(exception: unknown, host: ArgumentsHost): void {
    const ctx = host.switchToHttp();
    const res = ctx.getResponse<Response>();
    const req = ctx.getRequest<Request>();
    const problem = toProblem(exception);
    if (problem.body.code === ErrorCode.Internal) {
      this.logger.error({ err: exception, path: req.path }, 'unhandled error');
    }
    // A stream that already started cannot change its status; closing it is all that is left.
    if (res.headersSent) {
      res.end();
      return;
    }
    sendProblem(res, problem, redactUrl(req.originalUrl));
  }
}
