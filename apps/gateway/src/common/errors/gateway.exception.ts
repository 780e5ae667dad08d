import { type ErrorCode } from './error-code';

export interface GatewayExceptionOptions {
  /** Seconds the client should wait before retrying; becomes Retry-After. */
  retryAfterSec?: number;
  headers?: Record<string, string>;
}

/** The one exception type of the gateway: a stable code, a human detail, optional headers. */
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
