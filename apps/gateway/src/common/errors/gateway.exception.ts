import { ErrorCode } from './error-code';

/** A limit that applies to the request, as the IETF RateLimit headers (or a Socket.IO problem) tell it. */
export interface RateLimitInfo {
  /** The policy's name: `sessions`, `user-sessions`, `questions`. */
  policy: string;
  /** The quota, when known. */
  limit?: number;
  /** The window of the quota, in s, when it has one. */
  windowSec?: number;
  remaining: number;
  /** Seconds until the quota resets (or the client may try again). */
  resetSec: number;
}

export interface GatewayExceptionOptions {
  /** Seconds the client should wait before retrying; becomes Retry-After (or retryAfterMs). */
  retryAfterSec?: number;
  rateLimit?: RateLimitInfo;
}

/**
 * The one domain error of the gateway: a stable code, a human detail, and when to come back.
 * Domain code throws it and knows nothing of transports; the edge maps it: problem.ts to an HTTP
 * status and headers, socket-problem.ts to a Socket.IO error payload. A refusal is control flow,
 * not a fault: no stack is captured for it (it would cost time on the refusal path, and a stack in
 * a log says "bug" where there is none). `internal` keeps one.
 */
export class GatewayException extends Error {
  readonly code: ErrorCode;
  readonly detail: string;
  readonly options: GatewayExceptionOptions;

  constructor(code: ErrorCode, detail: string, options: GatewayExceptionOptions = {}) {
    const limit = Error.stackTraceLimit;
    if (code !== ErrorCode.Internal) Error.stackTraceLimit = 0;
    super(`${code}: ${detail}`);
    Error.stackTraceLimit = limit;
    this.name = 'GatewayException';
    this.code = code;
    this.detail = detail;
    this.options = options;
  }
}
