import { ErrorCode } from './error-code';

export interface GatewayExceptionOptions {
  /** Seconds the client should wait before retrying; becomes Retry-After. */
  retryAfterSec?: number;
  headers?: Record<string, string>;
}

/**
 * The one exception type of the gateway: a stable code, a human detail, optional headers. A
 * refusal is control flow, not a fault: no stack is captured for it (it would cost time on the
 * refusal path, and a stack in a log says "bug" where there is none). `internal` keeps one.
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
