import type { INestApplication } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import type { NestExpressApplication } from '@nestjs/platform-express';
import { json, type NextFunction, type Request, type Response } from 'express';
import { Logger } from 'nestjs-pino';
import type { GatewayConfig } from '../common/config/config';
import { sendProblem, toProblem } from '../common/errors';
import { BreakerService } from '../ai/breaker.service';
import { LifecycleService } from '../common/lifecycle.service';
import { setupOpenApi } from '../docs/openapi';
import { httpMetrics } from '../metrics/http-metrics.middleware';
import { MetricsService } from '../metrics/metrics.service';
import { AppModule } from './app.module';

/** Builds the Nest app for one instance; main.ts and the integration tests share it. */
export async function createApp(config: GatewayConfig, instanceId: string): Promise<INestApplication> {
  const app = await NestFactory.create<NestExpressApplication>(AppModule.forRoot(config, instanceId), {
    bodyParser: false,
    bufferLogs: true,
  });
  app.useLogger(app.get(Logger));
  app.set('trust proxy', config.TRUST_PROXY);
  app.disable('x-powered-by');
  if (config.CORS_ORIGINS) {
    // First, so refusals (429, 503) carry the headers too: a browser can only read them then.
    // No credentials: the API authenticates with bearer tokens, never with cookies.
    app.enableCors({
      origin: config.CORS_ORIGINS.includes('*') ? '*' : config.CORS_ORIGINS,
      methods: ['GET', 'POST', 'DELETE'],
      allowedHeaders: ['Authorization', 'Content-Type', 'X-Request-Id', 'Last-Event-ID'],
      exposedHeaders: ['Retry-After', 'RateLimit', 'RateLimit-Policy', 'WWW-Authenticate', 'X-Request-Id', 'X-Instance-Id'],
      credentials: false,
      maxAge: 600,
    });
  }
  const lifecycle = app.get(LifecycleService);
  app.use(httpMetrics(app.get(MetricsService)));
  app.use((_req: Request, res: Response, next: NextFunction) => {
    res.setHeader('X-Instance-Id', instanceId);
    // A draining instance asks the proxy not to reuse the connection: its keep-alive pool to
    // this instance empties before the listener closes, so no request is sent into a closing socket.
    if (lifecycle.draining) res.setHeader('Connection', 'close');
    next();
  });
  // An open breaker refuses a question before its body is read or a route is matched: the
  // cheapest answer the gateway can give, as fast as the edge's own refusals.
  const breaker = app.get(BreakerService, { strict: false });
  app.use('/chat/sessions/:sessionId/messages', (req: Request, res: Response, next: NextFunction) => {
    if (req.method !== 'POST') return next();
    try {
      breaker.assertClosed();
    } catch (err) {
      return sendProblem(res, toProblem(err), req.originalUrl);
    }
    next();
  });
  const parse = json({ limit: config.BODY_MAX_BYTES, strict: true, type: 'application/json' });
  // Parser errors happen before any route, so they are mapped here, by the same toProblem.
  app.use((req: Request, res: Response, next: NextFunction) => {
    parse(req, res, (err?: unknown) => (err ? sendProblem(res, toProblem(err), req.originalUrl) : next()));
  });
  setupOpenApi(app, config);
  // Signals are handled in main.ts (drain first, then close); tests call app.close().
  return app;
}
