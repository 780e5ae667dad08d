import type { Cluster, Redis } from 'ioredis';
import Redlock from 'redlock';
import { breakerClose, breakerRecord, breakerState, breakerTrip } from './breaker.scripts';
import { withDeadline } from './deadline';

export type BreakerState = 'closed' | 'open' | 'half_open';
export type Outcome = 'success' | 'failure' | 'timeout';

export interface BreakerOptions {
  /** Connection for the breaker's scripts (the dam's fast-failing one is a good fit). */
  redis: Redis | Cluster;
  instanceId: string;
  /** Rolling window of outcomes, in ms. Default 10,000. */
  windowMs?: number;
  /** Width of one window bucket, in ms. Default 1,000. */
  bucketMs?: number;
  /** Answers in the window before the ratio counts. Default 20. */
  minVolume?: number;
  /** Share of failures and timeouts that trips it, 0..1. Default 0.5. */
  errorRatio?: number;
  /** How long it stays open before one instance probes, in ms. Default 5,000. */
  openMs?: number;
  /** How often each instance reads the shared state, in ms. Default 250. */
  pollMs?: number;
  /** Deadline of one breaker script, in ms. Default 200. */
  redisTimeoutMs?: number;
  /** Sends one probe question to the AI and says whether a good answer came back. */
  probe: () => Promise<boolean>;
  /** How long the probe lock is held, in ms (longer than one probe). Default 10,000. */
  probeLockMs?: number;
  keyPrefix?: string;
  hashTag?: string;
  onTransition?: (t: { from: BreakerState; to: BreakerState; reason: string }) => void;
}

/**
 * A circuit breaker toward the AI worker whose state lives in Redis, so every instance trips and
 * recovers together. Each instance serves allow() from a local copy refreshed every pollMs; in
 * half-open exactly one instance (the redlock holder) sends a probe and closes or re-opens it.
 */
export class CircuitBreaker {
  private readonly redis: Redis | Cluster;
  private readonly keys: [string, string];
  private readonly lockKey: string;
  private readonly redlock: Redlock;
  private state: BreakerState = 'closed';
  private msUntilHalfOpen = 0;
  private readAt = Date.now();
  private reason = '';
  private timer: NodeJS.Timeout | null = null;
  private probing = false;
  private readonly o: Required<Omit<BreakerOptions, 'onTransition'>> & Pick<BreakerOptions, 'onTransition'>;

  constructor(options: BreakerOptions) {
    this.o = {
      windowMs: 10_000,
      bucketMs: 1_000,
      minVolume: 20,
      errorRatio: 0.5,
      openMs: 5_000,
      pollMs: 250,
      redisTimeoutMs: 200,
      probeLockMs: 10_000,
      keyPrefix: 'td:dam',
      hashTag: 'breaker',
      ...options,
    };
    const base = `${this.o.keyPrefix}:{${this.o.hashTag}}`;
    this.keys = [`${base}:state`, `${base}:window`];
    this.lockKey = `${base}:probe`;
    const r = this.o.redis;
    this.redis = r;
    // One lock server: the breaker's state lives on the same Redis, so more would add nothing.
    this.redlock = new Redlock([r], { retryCount: 0 });
    this.redlock.on('error', () => undefined);
  }

  get current(): { state: BreakerState; reason: string; retryAfterMs: number } {
    return { state: this.state, reason: this.reason, retryAfterMs: this.retryAfterMs() };
  }

  async start(): Promise<void> {
    await this.refresh();
    this.timer = setInterval(() => void this.refresh(), this.o.pollMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  /** Local and synchronous: a refused question costs no Redis round trip. */
  allow(): { allowed: true } | { allowed: false; retryAfterMs: number; state: BreakerState } {
    if (this.state === 'closed') return { allowed: true };
    return { allowed: false, retryAfterMs: this.retryAfterMs(), state: this.state };
  }

  /** Counts one answer. Fire and forget: the outcome matters, not its latency. */
  record(outcome: Outcome): void {
    const p = breakerRecord(this.redis, this.keys, [
      outcome === 'success' ? 'ok' : 'err',
      this.o.windowMs,
      this.o.bucketMs,
      this.o.minVolume,
      this.o.errorRatio,
      this.o.openMs,
    ]);
    withDeadline(p, this.o.redisTimeoutMs).then(
      (r) => this.apply(r),
      () => undefined,
    );
  }

  /** Opens it now (no live worker). Keeps an open period already running. */
  async trip(reason: string): Promise<void> {
    if (this.state === 'open') return;
    const r = await withDeadline(breakerTrip(this.redis, this.keys, [reason, this.o.openMs, '1']), this.o.redisTimeoutMs).catch(() => null);
    if (r) this.apply(r);
  }

  private retryAfterMs(): number {
    if (this.state === 'closed') return 0;
    // Half-open waits for one probe; a client should come back about then.
    const left = this.msUntilHalfOpen - (Date.now() - this.readAt);
    return Math.max(this.state === 'half_open' ? 1_000 : 0, left);
  }

  /** Reads the shared state now (the timer does it every pollMs). */
  async refresh(): Promise<void> {
    try {
      this.apply(await withDeadline(breakerState(this.redis, this.keys, []), this.o.redisTimeoutMs));
    } catch {
      return; // Redis away: keep the last known state
    }
    if (this.state === 'half_open' && !this.probing) void this.tryProbe();
  }

  private apply([state, msUntil, reason]: [string, number, string, number]): void {
    const next = state as BreakerState;
    const from = this.state;
    this.state = next;
    this.msUntilHalfOpen = msUntil;
    this.readAt = Date.now();
    this.reason = reason;
    if (from !== next) this.o.onTransition?.({ from, to: next, reason });
  }

  /** Only the lock holder probes; the others keep refusing until the state changes. */
  private async tryProbe(): Promise<void> {
    this.probing = true;
    let lock: Awaited<ReturnType<Redlock['acquire']>> | null = null;
    try {
      lock = await this.redlock.acquire([this.lockKey], this.o.probeLockMs);
    } catch {
      this.probing = false;
      return; // another instance probes
    }
    try {
      // The read that sent this instance here may be older than another instance's probe, which
      // closed the breaker (or opened it again) and then let go of the lock: look again, under it.
      this.apply(await withDeadline(breakerState(this.redis, this.keys, []), this.o.redisTimeoutMs));
      if (this.state !== 'half_open') return;
      const ok = await this.o.probe().catch(() => false);
      const r = ok
        ? await withDeadline(breakerClose(this.redis, this.keys, []), this.o.redisTimeoutMs)
        : await withDeadline(breakerTrip(this.redis, this.keys, ['probe_failed', this.o.openMs, '0']), this.o.redisTimeoutMs);
      this.apply(r);
    } catch {
      // Redis away mid-probe: the state stays half-open and the lock expires.
    } finally {
      this.probing = false;
      await lock.release().catch(() => undefined);
    }
  }
}
