import type { ServerResponse } from 'node:http';
import type { ProblemResponse } from './problem';
import { markProblem } from './refusal';

/** A whole response: what both the framework's path and the fast path write, so they answer alike. */
export interface RenderedResponse {
  status: number;
  headers: Readonly<Record<string, string>>;
  body: string;
}

// The body of a problem but its `instance`, per code and detail: under load most refusals repeat one.
const bodies = new Map<string, string>();
const BODIES_KEPT = 256;

function bodyOf(problem: ProblemResponse, instance: string): string {
  const b = problem.body;
  if (b.instance !== undefined) return JSON.stringify({ ...b, instance });
  const key = `${b.code}\n${b.detail}`;
  let head = bodies.get(key);
  if (head === undefined) {
    if (bodies.size >= BODIES_KEPT) bodies.clear();
    // JSON.stringify({...b, instance}) with `instance` last, as it would come.
    head = `${JSON.stringify(b).slice(0, -1)},"instance":`;
    bodies.set(key, head);
  }
  return `${head}${JSON.stringify(instance)}}`;
}

// The headers on the wire of a problem, once per problem (toProblem gives a shared refusal one problem).
const headersOf = new WeakMap<ProblemResponse, Readonly<Record<string, string>>>();

/** A problem as it goes on the wire: its status and headers, and its body with the request as `instance`. */
export function renderProblem(problem: ProblemResponse, instance: string): RenderedResponse {
  let headers = headersOf.get(problem);
  if (headers === undefined) headersOf.set(problem, (headers = Object.freeze({ ...problem.headers, 'Content-Type': 'application/problem+json; charset=utf-8' })));
  return { status: problem.status, headers, body: bodyOf(problem, instance) };
}

/**
 * Writes a rendered response on any node:http response (Express's included). Node adds Date,
 * Connection and Content-Length; no ETag: a refusal is never revalidated.
 */
export function writeRendered(res: ServerResponse, r: RenderedResponse): void {
  res.statusCode = r.status;
  for (const k in r.headers) res.setHeader(k, r.headers[k] as string);
  res.end(r.body);
}

export function sendProblem(res: ServerResponse, problem: ProblemResponse, instance: string): void {
  markProblem(res, problem.body.code);
  writeRendered(res, renderProblem(problem, instance));
}
