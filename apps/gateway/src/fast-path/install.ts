import type { Server } from 'node:http';
import type { INestApplication } from '@nestjs/common';
import { BreakerService } from '../ai/breaker.service';
import type { GatewayConfig } from '../common/config/config';
import { LifecycleService } from '../common/lifecycle.service';
import { DamService } from '../dam/dam.service';
import { MetricsService } from '../metrics/metrics.service';
import { QuestionsService } from '../questions/questions.service';
import { FastRefusals, type RequestListener } from './fast-refusals';

/**
 * Puts the fast refusals in front of the framework on the app's HTTP server: every request meets
 * them first and goes on to the framework's listeners unless they answered it. Socket.IO, attached
 * when the app initialises, takes its own paths before either.
 */
export function installFastRefusals(app: INestApplication, config: GatewayConfig, instanceId: string): void {
  const server = app.getHttpServer() as Server;
  const listeners = server.listeners('request') as RequestListener[];
  server.removeAllListeners('request');
  const framework: RequestListener = (req, res) => {
    for (const l of listeners) l.call(server, req, res);
  };
  const fast = new FastRefusals(
    {
      config,
      instanceId,
      lifecycle: app.get(LifecycleService),
      dam: app.get(DamService),
      breaker: app.get(BreakerService),
      questions: app.get(QuestionsService),
      metrics: app.get(MetricsService),
    },
    framework,
  );
  server.on('request', (req, res) => fast.handle(req, res));
}
