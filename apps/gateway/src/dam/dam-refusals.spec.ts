import { ErrorCode } from '../common/errors';
import { DamRefusals } from './dam-refusals';

describe('DamRefusals', () => {
  const refusals = new DamRefusals(5);

  it('a line refusal retries after the line estimate, a full budget after the crowd spread', () => {
    const line = refusals.of('wait_too_long', 2_000, 7_200);
    expect(line.code).toBe(ErrorCode.DamFull);
    expect(line.options.retryAfterSec).toBe(8);
    expect(line.options.rateLimit).toMatchObject({ policy: 'sessions', limit: 2_000, remaining: 0, resetSec: 8 });
    expect(line.detail).toContain('estimated wait');
    const full = refusals.of('dam_full', 2_000);
    expect(full.code).toBe(ErrorCode.DamFull);
    expect(full.options.retryAfterSec).toBeGreaterThanOrEqual(1);
    expect(full.detail).toBe('No session slot is free; retry after the given delay.');
  });

  it('names the per-user limit it was told, with a small jittered Retry-After', () => {
    const r = refusals.of('user_sessions', undefined);
    expect(r.code).toBe(ErrorCode.UserSessionLimit);
    expect(r.detail).toBe('At most 5 open sessions per user; close one first.');
    expect(r.options.retryAfterSec).toBeGreaterThanOrEqual(1);
    expect(r.options.retryAfterSec).toBeLessThanOrEqual(3);
    expect(r.options.rateLimit).toMatchObject({ policy: 'user-sessions', limit: 5, remaining: 0 });
  });

  it('Redis away is redis_unavailable', () => {
    expect(refusals.of('redis_unavailable', undefined).code).toBe(ErrorCode.RedisUnavailable);
  });
});
