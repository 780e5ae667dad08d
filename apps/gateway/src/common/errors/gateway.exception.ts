import { type ErrorCode } from './error-code';

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
 * status and headers, socket-problem.ts to a Socket.IO error payload.
 */
export class GatewayException extends Error {
  constructor(
    readonly code: ErrorCode,
    readonly detail: string,
    readonly options: GatewayExceptionOptions = {},
  ) {
    super(`${code}: ${detail}`);
    this.name = 'GatewayException';
  }
}
