import type { INestApplication } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import type { NestExpressApplication } from '@nestjs/platform-express';
import type { NextFunction, Request, Response } from 'express';
import { Logger } from 'nestjs-pino';
import type { GatewayConfig } from '../common/config/config';
import { LifecycleService } from '../common/lifecycle.service';
import { setupOpenApi } from '../docs/openapi';
import { RedisIoAdapter } from '../socketio/redis-io.adapter';
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
  app.useWebSocketAdapter(new RedisIoAdapter(app, config));
  setupOpenApi(app, config);
  // Signals are handled in main.ts (drain first, then close); tests call app.close().
  return app;
}
