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
import { installFastRefusals } from '../fast-path/install';
import { AppModule } from './app.module';
import { corsOptions } from './cors';
import { GatewayExpressAdapter } from './express-adapter';

/** Builds the Nest app for one instance; main.ts and the integration tests share it. */
export async function createApp(config: GatewayConfig, instanceId: string): Promise<INestApplication> {
  const app = await NestFactory.create<NestExpressApplication>(AppModule.forRoot(config, instanceId), new GatewayExpressAdapter(), {
    bodyParser: false,
    bufferLogs: true,
  });
  app.useLogger(app.get(Logger));
  app.set('trust proxy', config.TRUST_PROXY);
  app.disable('x-powered-by');
  const cors = corsOptions(config);
  // First, so refusals (429, 503) carry the headers too: a browser can only read them then.
  if (cors) app.enableCors(cors);
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
  if (config.FAST_REFUSALS) installFastRefusals(app, config, instanceId);
  // Signals are handled in main.ts (drain first, then close); tests call app.close().
  return app;
}
