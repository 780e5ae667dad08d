import { Injectable, type NestMiddleware } from '@nestjs/common';
import type { NextFunction, Request, Response } from 'express';
import { MetricsService } from './metrics.service';

// Route templates keep label cardinality bounded: session ids never become label values.
function routeOf(req: Request): string {
  const path = req.path;
  if (/^\/chat\/sessions\/[^/]+\/messages\/?$/.test(path)) return '/chat/sessions/:id/messages';
  if (/^\/chat\/sessions\/[^/]+\/?$/.test(path)) return '/chat/sessions/:id';
  const known = ['/chat/stream', '/health/live', '/health/ready', '/metrics', '/dam'];
  return known.includes(path) ? path : 'other';
}

@Injectable()
export class HttpMetricsMiddleware implements NestMiddleware {
  constructor(private readonly metrics: MetricsService) {}

  use(req: Request, res: Response, next: NextFunction): void {
    const end = this.metrics.httpDuration.startTimer();
    res.once('close', () => {
      const labels = { method: req.method, route: routeOf(req), status: String(res.statusCode) };
      end(labels);
      this.metrics.httpRequests.inc(labels);
    });
    next();
  }
}
