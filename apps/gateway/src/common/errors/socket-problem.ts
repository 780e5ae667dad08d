import { ErrorCode } from './error-code';
import { GatewayException, type RateLimitInfo } from './gateway.exception';
import { problemBody, type Problem } from './problem';

/** A problem as a Socket.IO client gets it: connect_error's `data`, or an ack of `ask`. */
export interface SocketProblem extends Problem {
  /** How long to wait before trying again, in ms, where waiting helps. */
  retryAfterMs?: number;
  rateLimit?: RateLimitInfo;
}

/** The Socket.IO edge: the one place where an error becomes a Socket.IO problem payload. */
export function toSocketProblem(err: unknown): SocketProblem {
  if (!(err instanceof GatewayException)) return problemBody(ErrorCode.Internal, 'An unexpected error occurred; it has been logged.');
  const p: SocketProblem = problemBody(err.code, err.detail);
  if (err.options.retryAfterSec !== undefined) p.retryAfterMs = Math.max(1, Math.ceil(err.options.retryAfterSec)) * 1_000;
  if (err.options.rateLimit) p.rateLimit = err.options.rateLimit;
  return p;
}
