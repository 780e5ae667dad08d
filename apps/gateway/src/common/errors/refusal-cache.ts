import type { ErrorCode } from './error-code';
import { GatewayException, type GatewayExceptionOptions } from './gateway.exception';

/** Distinct refusals kept; past it the cache starts again (a refusal's wording is a handful of variants). */
const KEPT = 64;

/**
 * One GatewayException per distinct refusal (code, detail, Retry-After, limit), shared by every
 * request refused alike. A refusal carries no stack and is never changed (its options are frozen),
 * so sharing it changes nothing a caller sees, and under overload it saves constructing an Error
 * per refusal, which costs as much as the refusal's own checks.
 */
export class RefusalCache {
  private readonly kept = new Map<string, GatewayException>();

  of(code: ErrorCode, detail: string, options: GatewayExceptionOptions = {}): GatewayException {
    const r = options.rateLimit;
    const key = `${code}\n${detail}\n${options.retryAfterSec}\n${r ? `${r.policy}|${r.limit}|${r.windowSec}|${r.remaining}|${r.resetSec}` : ''}`;
    let e = this.kept.get(key);
    if (e === undefined) {
      if (this.kept.size >= KEPT) this.kept.clear();
      e = new GatewayException(code, detail, Object.freeze(r ? { ...options, rateLimit: Object.freeze({ ...r }) } : { ...options }));
      this.kept.set(key, e);
    }
    return e;
  }
}
