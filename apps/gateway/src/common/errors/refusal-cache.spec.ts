import { ErrorCode } from './error-code';
import { GatewayException } from './gateway.exception';
import { toProblem } from './problem';
import { RefusalCache } from './refusal-cache';

describe('RefusalCache', () => {
  const limit = { policy: 'sessions', limit: 2, remaining: 0, resetSec: 3 };

  it('gives every request refused alike the same refusal, answered as a new one would be', () => {
    const cache = new RefusalCache();
    const a = cache.of(ErrorCode.DamFull, 'No session slot is free.', { retryAfterSec: 3, rateLimit: limit });
    const b = cache.of(ErrorCode.DamFull, 'No session slot is free.', { retryAfterSec: 3, rateLimit: { ...limit } });
    expect(b).toBe(a);
    expect(a).toBeInstanceOf(GatewayException);
    expect(toProblem(a)).toEqual(toProblem(new GatewayException(ErrorCode.DamFull, 'No session slot is free.', { retryAfterSec: 3, rateLimit: limit })));
  });

  it('keeps refusals that differ in anything the client sees apart', () => {
    const cache = new RefusalCache();
    const a = cache.of(ErrorCode.DamFull, 'full', { retryAfterSec: 3, rateLimit: limit });
    expect(cache.of(ErrorCode.DamFull, 'full', { retryAfterSec: 4, rateLimit: limit })).not.toBe(a);
    expect(cache.of(ErrorCode.DamFull, 'full', { retryAfterSec: 3, rateLimit: { ...limit, limit: 3 } })).not.toBe(a);
    expect(cache.of(ErrorCode.DamFull, 'full', { retryAfterSec: 3 })).not.toBe(a);
    expect(cache.of(ErrorCode.AiOverloaded, 'full', { retryAfterSec: 3, rateLimit: limit })).not.toBe(a);
    expect(cache.of(ErrorCode.DamFull, 'full, again', { retryAfterSec: 3, rateLimit: limit })).not.toBe(a);
  });

  it('shares nothing a caller can change, and carries no stack', () => {
    const options = { retryAfterSec: 3, rateLimit: { ...limit } };
    const a = new RefusalCache().of(ErrorCode.DamFull, 'full', options);
    options.rateLimit.remaining = 5;
    expect(a.options.rateLimit?.remaining).toBe(0);
    expect(Object.isFrozen(a.options)).toBe(true);
    expect(Object.isFrozen(a.options.rateLimit)).toBe(true);
    expect(a.stack).not.toContain(' at ');
  });

  it('starts again past its bound rather than growing', () => {
    const cache = new RefusalCache();
    const first = cache.of(ErrorCode.AiOverloaded, 'wait 0', { retryAfterSec: 1 });
    for (let i = 1; i <= 64; i++) cache.of(ErrorCode.AiOverloaded, `wait ${i}`, { retryAfterSec: 1 });
    expect(cache.of(ErrorCode.AiOverloaded, 'wait 0', { retryAfterSec: 1 })).not.toBe(first);
  });
});
