import type { NextFunction, Request, RequestHandler, Response } from 'express';
import { problemCodeOf, type ErrorCode } from '../common/errors';
import type { MetricsService } from './metrics.service';
import type { CountSeries, HistogramSeries } from './tally';

/** The route templates requests are counted by. */
export const ROUTE_STREAM = '/chat/stream';
export const ROUTE_MESSAGES = '/chat/sessions/:id/messages';

// Route templates keep label cardinality bounded: session ids never become label values.
function routeOf(path: string): string {
  if (/^\/chat\/sessions\/[^/]+\/messages\/?$/.test(path)) return ROUTE_MESSAGES;
  if (/^\/chat\/sessions\/[^/]+\/?$/.test(path)) return '/chat/sessions/:id';
  const known = [ROUTE_STREAM, '/health/live', '/health/ready', '/metrics', '/dam'];
  return known.includes(path) ? path : 'other';
}

interface Series {
  duration: HistogramSeries;
  requests: CountSeries;
  refusals: Map<string, CountSeries>;
}

// The series of each label set, looked up once: a refusal under load is counted tens of thousands
// of times a second. Bounded: methods, route templates and statuses are few.
const seriesOf = new WeakMap<MetricsService, Map<string, Series>>();

/** One request answered: its count, its duration and, when it was a problem, its refusal by code. */
export function recordRequest(metrics: MetricsService, method: string, route: string, status: number, seconds: number, code: ErrorCode | undefined): void {
  let all = seriesOf.get(metrics);
  if (!all) seriesOf.set(metrics, (all = new Map()));
  const key = `${method} ${route} ${status}`;
  let s = all.get(key);
  if (!s) {
    const labels = { method, route, status: String(status) };
    s = { duration: metrics.httpDuration.series(labels), requests: metrics.httpRequests.series(labels), refusals: new Map() };
    all.set(key, s);
  }
  s.duration.observe(seconds);
  s.requests.inc();
  if (code === undefined) return;
  let r = s.refusals.get(code);
  if (!r) s.refusals.set(code, (r = metrics.httpRefusals.series({ route, code })));
  r.inc();
}

/**
 * Counts and times every request, and every refusal by its problem code. Mounted first (in
 * create-app), so the refusals answered before any route (an open breaker, a body that does not
 * parse) are counted too. The fast path (fast-path/) counts its answers with recordRequest too.
 */
export function httpMetrics(metrics: MetricsService): RequestHandler {
  return (req: Request, res: Response, next: NextFunction): void => {
    const started = process.hrtime.bigint();
    res.once('close', () => {
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      recordRequest(metrics, req.method, routeOf(req.path), res.statusCode, seconds, problemCodeOf(res));
    });
    next();
  };
}
