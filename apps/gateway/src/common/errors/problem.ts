import { HttpException } from '@nestjs/common';
import { ERROR_STATUS, ERROR_TITLE, ErrorCode } from './error-code';
import { GatewayException, type RateLimitInfo } from './gateway.exception';

/** RFC 9457 problem details plus our stable code. */
export interface Problem {
  type: string;
  title: string;
  status: number;
  detail: string;
  code: ErrorCode;
  instance?: string;
}

export interface ProblemResponse {
  status: number;
  body: Problem;
  headers: Record<string, string>;
}

// body-parser marks its errors with a `type`; they arrive before any handler runs.
interface BodyParserError {
  type?: string;
  status?: number;
  message?: string;
}

/** The RFC 9457 body of a code: the same for HTTP and Socket.IO. */
export function problemBody(code: ErrorCode, detail: string): Problem {
  const status = ERROR_STATUS[code];
  return { type: `https://traffic-dam.dev/problems/${code}`, title: ERROR_TITLE[code], status, detail, code };
}

function fromCode(code: ErrorCode, detail: string, headers: Record<string, string> = {}): ProblemResponse {
  return { status: ERROR_STATUS[code], headers, body: problemBody(code, detail) };
}

/** The IETF RateLimit-Policy and RateLimit headers of a limit. */
export function rateLimitHeaders(r: RateLimitInfo): Record<string, string> {
  const headers: Record<string, string> = { RateLimit: `"${r.policy}";r=${r.remaining};t=${r.resetSec}` };
  if (r.limit !== undefined) headers['RateLimit-Policy'] = `"${r.policy}";q=${r.limit}${r.windowSec !== undefined ? `;w=${r.windowSec}` : ''}`;
  return headers;
}

// A domain error's problem, worked out once: a shared refusal (RefusalCache) answers many requests.
// Frozen, as the error it comes from.
const problems = new WeakMap<GatewayException, ProblemResponse>();

function fromException(err: GatewayException): ProblemResponse {
  const headers = err.options.rateLimit ? rateLimitHeaders(err.options.rateLimit) : {};
  if (err.options.retryAfterSec !== undefined) headers['Retry-After'] = String(Math.max(1, Math.ceil(err.options.retryAfterSec)));
  if (err.code === ErrorCode.MissingToken) headers['WWW-Authenticate'] = 'Bearer';
  if (err.code === ErrorCode.InvalidToken || err.code === ErrorCode.InvalidCredentials || err.code === ErrorCode.InvalidTicket) {
    headers['WWW-Authenticate'] = 'Bearer error="invalid_token"';
  }
  const p = fromCode(err.code, err.detail, Object.freeze(headers));
  return Object.freeze({ ...p, body: Object.freeze(p.body) });
}

/** The HTTP edge: the one place where an error becomes an HTTP status, headers and a problem body. */
export function toProblem(err: unknown): ProblemResponse {
  if (err instanceof GatewayException) {
    let p = problems.get(err);
    if (p === undefined) problems.set(err, (p = fromException(err)));
    return p;
  }
  const bp = err as BodyParserError;
  if (bp && typeof bp === 'object' && typeof bp.type === 'string') {
    switch (bp.type) {
      case 'entity.parse.failed':
        return fromCode(ErrorCode.BadJson, 'The body could not be parsed as JSON.');
      case 'entity.too.large':
        return fromCode(ErrorCode.BodyTooLarge, 'The body is over the size limit.');
      case 'encoding.unsupported':
      case 'charset.unsupported':
        return fromCode(ErrorCode.UnsupportedMediaType, bp.message ?? 'Unsupported encoding.');
      default:
        if (bp.status !== undefined && bp.status >= 400 && bp.status < 500) {
          return fromCode(ErrorCode.BadRequest, bp.message ?? 'The body could not be read.');
        }
    }
  }
  if (err instanceof HttpException) {
    const status = err.getStatus();
    if (status === 404) return fromCode(ErrorCode.NotFound, 'No such route.');
    if (status === 405) return fromCode(ErrorCode.MethodNotAllowed, 'Method not allowed on this route.');
    if (status === 413) return fromCode(ErrorCode.BodyTooLarge, 'The body is over the size limit.');
    if (status === 415) return fromCode(ErrorCode.UnsupportedMediaType, 'Body must be application/json.');
    if (status >= 400 && status < 500) return fromCode(ErrorCode.BadRequest, err.message);
  }
  return fromCode(ErrorCode.Internal, 'An unexpected error occurred; it has been logged.');
}
