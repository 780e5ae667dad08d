import type { IncomingMessage, ServerResponse } from 'node:http';
import { parse as parseQuery, type ParsedUrlQuery } from 'node:querystring';
import { Logger } from '@nestjs/common';
import cors from 'cors';
import type { RequestHandler } from 'express';
import typeis from 'type-is';
import type { BreakerService } from '../ai/breaker.service';
import type { GatewayConfig } from '../common/config/config';
import { ErrorCode, renderProblem, toProblem, writeRendered, type RenderedResponse } from '../common/errors';
import type { LifecycleService } from '../common/lifecycle.service';
import { redactUrl } from '../common/redact-url';
import { requestIdOf } from '../common/request-id';
import type { DamService } from '../dam/dam.service';
import { ROUTE_MESSAGES, ROUTE_STREAM, recordRequest } from '../metrics/http-metrics.middleware';
import type { MetricsService } from '../metrics/metrics.service';
import { SESSION_ID, parseBearer, parseQuestionBody } from '../questions/question-body';
import type { QuestionsService } from '../questions/questions.service';
import { drainingRefusal } from '../sessions/draining.guard';
import { jsonBodyParser } from '../sse/json-body.interceptor';
import { REFUSAL_AS_EVENT, renderRefusalEvent } from '../sse/refusal-event';
import { corsOptions } from '../app/cors';
import { isPlainJson, readPlainJson, type BodyOutcome } from './json-body';

export type RequestListener = (req: IncomingMessage, res: ServerResponse) => void;

export interface FastRefusalsDeps {
  config: GatewayConfig;
  instanceId: string;
  lifecycle: LifecycleService;
  dam: DamService;
  breaker: BreakerService;
  questions: QuestionsService;
  metrics: MetricsService;
}

// One path segment as Express's router would take it for :sessionId, without escapes to decode.
const MESSAGES = /^\/chat\/sessions\/([A-Za-z0-9._~-]+)\/messages(?:\?|$)/;

/**
 * The refusals a gateway decides without asking Redis, answered on the raw node:http request
 * before Express and Nest see it: a draining instance (503 draining), an instance at its ceiling
 * (429 dam_full; with the default settings a full global budget means every instance is at its
 * ceiling), the breaker open (503 ai_unavailable), a known AI overload (503 ai_overloaded, after
 * the body is read and checked, as the framework's path does). Under overload these are most of
 * the requests, and the framework's path costs about twenty times a bare node:http answer.
 *
 * Each answer is exactly the framework's: the same checks in the same order (the services' own
 * methods), the same rendering (renderProblem, renderRefusalEvent), the same headers (request id,
 * instance id, CORS with the same policy, Connection: close while draining) and the same metrics.
 * Whatever this cannot decide exactly goes to the framework untouched: a resume (Last-Event-ID), a
 * stream ticket, a request that offers to wait, another method or path, an unusual body.
 */
export class FastRefusals {
  private readonly cors: RequestHandler | null;
  private readonly parseBody: RequestHandler;
  private readonly logger = new Logger('ProblemFilter');

  constructor(
    private readonly d: FastRefusalsDeps,
    private readonly framework: RequestListener,
  ) {
    const policy = corsOptions(d.config);
    this.cors = policy ? (cors(policy) as RequestHandler) : null;
    this.parseBody = jsonBodyParser(d.config);
  }

  handle(req: IncomingMessage, res: ServerResponse): void {
    const url = req.url ?? '';
    if (req.method === 'GET') {
      if (url === ROUTE_STREAM || url.startsWith('/chat/stream?')) return this.stream(req, res, url);
    } else if (req.method === 'POST' && url.startsWith('/chat/sessions/')) {
      const m = MESSAGES.exec(url);
      if (m) return this.question(req, res, url, m[1] as string);
    }
    this.framework(req, res);
  }

  /** GET /chat/stream: the DrainingGuard, then the dam's ceiling, as the controller would meet them. */
  private stream(req: IncomingMessage, res: ServerResponse, url: string): void {
    const started = process.hrtime.bigint();
    const draining = drainingRefusal(this.d.lifecycle);
    if (draining) return this.problem(req, res, url, ROUTE_STREAM, draining, started);
    const query = queryOf(url);
    // A resume takes no slot; a ticket is spent before the dam is asked; a waiter queues.
    if (req.headers['last-event-id'] !== undefined || query?.['ticket'] !== undefined || offersToWait(req, query)) return this.framework(req, res);
    let refusal;
    try {
      refusal = this.d.dam.refuseAtCeiling({ headers: req.headers });
    } catch {
      // A missing or bad JWT: the framework answers it, as it would have before the dam.
      return this.framework(req, res);
    }
    if (refusal === null) return this.framework(req, res);
    if (query?.['refusal'] === REFUSAL_AS_EVENT) return this.write(req, res, ROUTE_STREAM, renderRefusalEvent(refusal), undefined, started);
    this.problem(req, res, url, ROUTE_STREAM, refusal, started);
  }

  /**
   * POST a question: the BreakerGuard first (before the body), then, while the AI gate's last
   * refusal proves the line too long, the body read and checked by the same parser and rules, and
   * the refusal QuestionsService.ask() gives before anything else. A question whose proof ran out
   * while its body came goes to the framework with the body read (its parser then skips).
   */
  private question(req: IncomingMessage, res: ServerResponse, url: string, sessionId: string): void {
    const started = process.hrtime.bigint();
    const open = this.d.breaker.refusal();
    if (open) return this.problem(req, res, url, ROUTE_MESSAGES, open, started);
    if (!this.d.questions.refusesAtOnce) return this.framework(req, res);
    // What the controller checks before it asks: a token, JSON (plain JSON is, as type-is says), a session id that can be one.
    const plain = isPlainJson(req, this.d.config.BODY_MAX_BYTES);
    if (offersToWait(req, queryOf(url)) || parseBearer(req.headers.authorization) === null || (!plain && !typeis(req, ['application/json'])) || !SESSION_ID.test(sessionId)) {
      return this.framework(req, res);
    }
    const read = (o: BodyOutcome): void => {
      if (!o.ok) return this.problem(req, res, url, ROUTE_MESSAGES, o.error, started);
      // Where the framework's parser puts it; finding the request read, that parser passes it on.
      (req as { body?: unknown }).body = o.body;
      try {
        parseQuestionBody(o.body, this.d.config.QUESTION_MAX_CHARS);
      } catch (e) {
        return this.problem(req, res, url, ROUTE_MESSAGES, e, started);
      }
      const overloaded = this.d.questions.knownOverloadRefusal('http');
      if (overloaded) return this.problem(req, res, url, ROUTE_MESSAGES, overloaded, started);
      this.framework(req, res);
    };
    if (plain) return readPlainJson(req, read);
    void this.parseBody(req as never, res as never, (err?: unknown) => read(err === undefined ? { ok: true, body: (req as { body?: unknown }).body } : { ok: false, error: err as never }));
  }

  private problem(req: IncomingMessage, res: ServerResponse, url: string, route: string, err: unknown, started: bigint): void {
    const problem = toProblem(err);
    if (problem.body.code === ErrorCode.Internal) this.logger.error({ err, path: url.split('?')[0] }, 'unhandled error');
    this.write(req, res, route, renderProblem(problem, redactUrl(url)), problem.body.code, started);
  }

  /** The headers every response of the framework carries, in the framework's order, then the answer; counted. */
  private write(req: IncomingMessage, res: ServerResponse, route: string, r: RenderedResponse, code: ErrorCode | undefined, started: bigint): void {
    if (this.cors) {
      this.cors(req as never, res as never, noop);
      res.setHeader('X-Instance-Id', this.d.instanceId);
      if (this.d.lifecycle.draining) res.setHeader('Connection', 'close');
      res.setHeader('X-Request-Id', requestIdOf(req));
      writeRendered(res, r);
    } else {
      // The same headers in one list: no header map is built for a response sent at once.
      const head: string[] = ['X-Instance-Id', this.d.instanceId];
      // Set first and overridden by the answer's own (an SSE refusal's keep-alive), as setHeader would.
      if (this.d.lifecycle.draining && r.headers['Connection'] === undefined) head.push('Connection', 'close');
      head.push('X-Request-Id', requestIdOf(req));
      for (const k in r.headers) head.push(k, r.headers[k] as string);
      head.push('Content-Length', String(Buffer.byteLength(r.body)));
      res.writeHead(r.status, head);
      res.end(r.body);
    }
    recordRequest(this.d.metrics, req.method as string, route, r.status, Number(process.hrtime.bigint() - started) / 1e9, code);
  }
}

function noop(): void {
  // cors calls next(); the answer is written by the caller.
}

function queryOf(url: string): ParsedUrlQuery | null {
  const q = url.indexOf('?');
  // Express's own query parser ('simple': node:querystring).
  return q < 0 ? null : parseQuery(url.slice(q + 1));
}

/** ?wait=N or Prefer: wait=N (opt-in waiting): such a request queues instead of being refused. */
function offersToWait(req: IncomingMessage, query: ParsedUrlQuery | null): boolean {
  const prefer = req.headers.prefer;
  return query?.['wait'] !== undefined || (prefer !== undefined && /wait/i.test(String(prefer)));
}
