export { Dam } from './lib/dam';
export type { AdmitResult, DamStatus, Lease, RefusalReason, ReleaseOutcome } from './lib/dam';
export type { DamEvent, DamMode, DamOptions, FallbackPolicy } from './lib/options';
export type { GlobalView } from './lib/budget.store';
export { RedisDeadlineError, withDeadline } from './lib/deadline';
export { UserRateLimiter } from './lib/user-rate';
export type { RateDecision, UserRateOptions } from './lib/user-rate';
export { CircuitBreaker } from './lib/breaker';
export type { BreakerOptions, BreakerState, Outcome } from './lib/breaker';
