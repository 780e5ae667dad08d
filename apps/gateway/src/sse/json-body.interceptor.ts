import { Inject, Injectable, type CallHandler, type ExecutionContext, type NestInterceptor } from '@nestjs/common';
import { json, type Request, type RequestHandler, type Response } from 'express';
import type { Observable } from 'rxjs';
import { GATEWAY_CONFIG, type GatewayConfig } from '../common/config/config';

/** The body parser of the routes that take JSON (the fast path reads a question's body with one too). */
export function jsonBodyParser(config: GatewayConfig): RequestHandler {
  return json({ limit: config.BODY_MAX_BYTES, strict: true, type: 'application/json' });
}

/**
 * Reads a JSON body (at most BODY_MAX_BYTES) on the routes that take one, after the guards: a
 * question refused by the breaker is answered before its body is read. Parser errors go to the
 * exception filter, which maps them (400 bad_json, 413 body_too_large).
 */
@Injectable()
export class JsonBodyInterceptor implements NestInterceptor {
  private readonly parse: RequestHandler;

  constructor(@Inject(GATEWAY_CONFIG) config: GatewayConfig) {
    this.parse = jsonBodyParser(config);
  }

  async intercept(context: ExecutionContext, next: CallHandler): Promise<Observable<unknown>> {
    const http = context.switchToHttp();
    await new Promise<void>((resolve, reject) => {
      void this.parse(http.getRequest<Request>(), http.getResponse<Response>(), (err?: unknown) => (err ? reject(err) : resolve()));
    });
    return next.handle();
  }
}
