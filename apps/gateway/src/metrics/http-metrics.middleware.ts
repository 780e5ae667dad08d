import type { NextFunction, Request, RequestHandler, Response } from 'express';
import { problemCodeOf } from '../common/errors';
import type { MetricsService } from './metrics.service';

// Route templates keep label cardinality bounded: session ids never become label values.
function routeOf(req: Request): string {
  const path = req.path;
  if (/^\/chat\/sessions\/[^/]+\/messages\/?$/.test(path)) return '/chat/sessions/:id/messages';
  if (/^\/chat\/sessions\/[^/]+\/?$/.test(path)) return '/chat/sessions/:id';
  const known = ['/chat/stream', '/health/live', '/health/ready', '/metrics', '/dam'];
  return known.includes(path) ? path : 'other';
}

/**
 * Counts and times every request, and every refusal by its problem code. Mounted first (in
 * create-app), so the refusals answered before any route (an open breaker, a body that does not
 * parse) are counted too.
 */
export function httpMetrics(metrics: MetricsService): RequestHandler {
  return (req: Request, res: Response, next: NextFunction): void => {
    const end = metrics.httpDuration.startTimer();
    res.once('close', () => {
      const labels = { method: req.method, route: routeOf(req), status: String(res.statusCode) };
      end(labels);
      metrics.httpRequests.inc(labels);
      const code = problemCodeOf(res);
      if (code !== undefined) metrics.httpRefusals.inc({ route: labels.route, code });
    });
    next();
  };
}
