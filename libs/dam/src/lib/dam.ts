import { BudgetStore, type GlobalView } from './budget.store';
import { withDeadline } from './deadline';
import { resolveDamOptions, type DamMode, type DamOptions, type FallbackPolicy, type ResolvedDamOptions } from './options';
import { redisErrorKind, type RedisErrorKind } from './redis-error';

export type RefusalReason = 'dam_full' | 'instance_full' | 'user_sessions' | 'redis_unavailable';

/** One admitted session's hold on the budget. release() is idempotent: the slot returns once. */
export interface Lease {
  readonly userId: string | null;
  /** False when admitted without a slot (shadow over budget, mode off). */
  readonly budgeted: boolean;
  readonly released: boolean;
  /**
   * Settles once Redis applied the release (`ok`), dropped it (`fenced`) or the call failed
   * (`failed`: an error, or the connection closed); null while not released, or when the release
   * did not go to Redis (fallback, no slot). It says what Redis did, so it has no deadline: a slow
   * reply is still `ok`. Callers need not wait for it (the heartbeat heals a lost release); tests
   * and benchmarks do.
   */
  readonly confirmation: Promise<ReleaseOutcome> | null;
  release(): void;
}

export type ReleaseOutcome = 'ok' | 'fenced' | 'failed';

export type AdmitResult =
  | { admitted: true; lease: Lease; fallback: boolean; shadowRefusal?: RefusalReason; global?: GlobalView }
  | { admitted: false; reason: RefusalReason; fallback: boolean; global?: GlobalView };

export interface DamStatus {
  instanceId: string;
  pid: number;
  mode: DamMode;
  held: number;
  ceiling: number;
  share: number;
  /** Sessions admitted without a slot (shadow mode over budget). */
  unbudgeted: number;
  global: (GlobalView & { instances?: string[]; stale: boolean; at: number }) | null;
  /** `reason`: why the last call to Redis failed while in fallback (`oom`: Redis at its memory limit). */
  fallback: { active: boolean; since: number | null; policy: FallbackPolicy; reason: RedisErrorKind | null };
  generation: string;
}

class DamLease implements Lease {
  released = false;
  confirmation: Promise<ReleaseOutcome> | null = null;
  constructor(
    private readonly dam: Dam,
    readonly userId: string | null,
    readonly budgeted: boolean,
  ) {}

  release(): void {
    if (this.released) return;
    this.released = true;
    this.dam.onRelease(this);
  }
}

/**
 * The connection gate: a local, exact per-instance ceiling, and the global pooled budget in
 * Redis (slots per instance x live instances), one script per admit and per release (admits
 * and releases made in the same turn of the event loop share one call). A
 * heartbeat keeps this instance alive in the budget and writes its true count, so a lost or
 * doubled update heals within one beat. Without Redis it falls back to its local share.
 */
export class Dam {
  private readonly o: ResolvedDamOptions;
  private readonly store: BudgetStore;
  private held = 0;
  /** Admits sent to Redis and not answered yet; the local ceiling counts them. */
  private pending = 0;
  /** Admit replies that said ok, counted as they arrive (even past their deadline). */
  private okReplies = 0;
  private unbudgeted = 0;
  private readonly users = new Map<string, number>();
  private generation = '';
  private registered = false;
  private usersDirty = true;
  private fallbackSince: number | null = null;
  private fallbackReason: RedisErrorKind | null = null;
  private lastGlobal: (GlobalView & { at: number }) | null = null;
  private timer: NodeJS.Timeout | null = null;
  private beating: Promise<void> | null = null;

  constructor(options: DamOptions) {
    this.o = resolveDamOptions(options);
    this.store = new BudgetStore(
      this.o.redis,
      this.o.instanceId,
      this.o.slotsPerInstance,
      this.o.keyPrefix,
      this.o.hashTag,
    );
  }

  get mode(): DamMode {
    return this.o.mode;
  }

  get inFallback(): boolean {
    return this.fallbackSince !== null;
  }

  /** Sessions this instance holds on the budget right now. */
  get heldCount(): number {
    return this.held;
  }

  /**
   * Whether admit() refuses at once, without asking Redis, because this instance holds its ceiling
   * (enforce mode: shadow admits over it). An edge can answer those refusals before anything else.
   */
  get atCeiling(): boolean {
    return this.o.mode === 'enforce' && this.held + this.pending >= this.o.instanceCeiling;
  }

  /** Registers this instance and starts the heartbeat. Never throws: without Redis it starts in fallback. */
  async start(): Promise<void> {
    if (this.o.mode === 'off' || this.timer) return;
    await this.connected(this.o.heartbeatTtlMs);
    await this.heartbeat();
    this.timer = setInterval(() => void this.heartbeat(), this.o.heartbeatMs);
    this.timer.unref();
  }

  /** The admission connection has no offline queue: wait (bounded) until it is ready. */
  private async connected(timeoutMs: number): Promise<void> {
    const redis = this.o.redis;
    if (redis.status === 'ready') return;
    await new Promise<void>((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        redis.off('ready', done);
        resolve();
      };
      const timer = setTimeout(done, timeoutMs);
      redis.once('ready', done);
    });
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    if (this.o.mode === 'off' || !this.registered) return;
    await withDeadline(this.store.deregister(), 500).catch(() => undefined);
    this.registered = false;
  }

  async admit(userId: string | null = null): Promise<AdmitResult> {
    if (this.o.mode === 'off') return { admitted: true, lease: new DamLease(this, userId, false), fallback: false };
    if (this.held + this.pending >= this.o.instanceCeiling) return this.refuse('instance_full', userId);
    if (this.fallbackSince !== null) return this.decideLocally(userId);
    const tracked = this.o.userMaxSessions > 0 && userId !== null;
    for (let attempt = 0; attempt < 2; attempt++) {
      this.pending++;
      let reply;
      const raw = this.store.admit(this.generation, tracked ? userId : '', this.o.userMaxSessions);
      raw.then(
        (r) => {
          if (r.status === 'ok') this.okReplies++;
        },
        () => undefined,
      );
      try {
        reply = await withDeadline(raw, this.o.redisTimeoutMs);
      } catch (err) {
        // No longer in flight when decided locally: counted as pending it would take the last slot
        // from itself (the local share would refuse with one slot still free).
        this.pending--;
        this.enterFallback(err);
        return this.decideLocally(userId);
      }
      this.pending--;
      this.lastGlobal = { used: reply.used, capacity: reply.capacity, live: reply.live, at: Date.now() };
      switch (reply.status) {
        case 'ok':
          return { admitted: true, lease: this.take(userId), fallback: false, global: this.lastGlobal };
        case 'dam_full':
        case 'user_sessions':
          return this.refuse(reply.status, userId);
        case 'fenced':
          // Presumed dead while paused or partitioned: re-register with the true count, then retry once.
          this.registered = false;
          this.usersDirty = true;
          await this.heartbeat();
          if (this.fallbackSince !== null) return this.decideLocally(userId);
          break;
      }
    }
    return this.refuse('dam_full', userId);
  }

  /** What this instance knows without asking Redis: for metrics, read on every scrape. */
  snapshot(): {
    held: number;
    unbudgeted: number;
    fallback: boolean;
    fallbackReason: RedisErrorKind | null;
    global: (GlobalView & { at: number }) | null;
  } {
    return {
      held: this.held,
      unbudgeted: this.unbudgeted,
      fallback: this.fallbackSince !== null,
      fallbackReason: this.fallbackReason,
      global: this.lastGlobal,
    };
  }

  async status(): Promise<DamStatus> {
    let global: DamStatus['global'] = this.lastGlobal ? { ...this.lastGlobal, stale: true } : null;
    if (this.o.mode !== 'off') {
      try {
        const s = await withDeadline(this.store.status(), Math.max(this.o.redisTimeoutMs, 200));
        global = { ...s, stale: false, at: Date.now() };
      } catch {
        // Redis away: report what we last saw, marked stale.
      }
    }
    return {
      instanceId: this.o.instanceId,
      pid: process.pid,
      mode: this.o.mode,
      held: this.held,
      ceiling: this.o.instanceCeiling,
      share: this.o.slotsPerInstance,
      unbudgeted: this.unbudgeted,
      global,
      fallback: { active: this.fallbackSince !== null, since: this.fallbackSince, policy: this.o.fallback, reason: this.fallbackReason },
      generation: this.generation,
    };
  }

  /** Runs one heartbeat now (the timer runs them every heartbeatMs); concurrent calls share one. */
  heartbeat(): Promise<void> {
    if (this.o.mode === 'off') return Promise.resolve();
    this.beating ??= this.beat().finally(() => {
      this.beating = null;
    });
    return this.beating;
  }

  /** @internal called by DamLease.release */
  onRelease(lease: DamLease): void {
    if (!lease.budgeted) {
      if (this.o.mode !== 'off') this.unbudgeted--;
      return;
    }
    this.held--;
    const tracked = this.o.userMaxSessions > 0 && lease.userId !== null;
    if (tracked) this.decUser(lease.userId as string);
    if (this.fallbackSince !== null || !this.registered) return;
    // Nobody waits on a release, so no deadline: one would only turn a late "applied" into a
    // false "failed". The heartbeat that follows on this connection counts it either way.
    lease.confirmation = this.store.release(this.generation, tracked ? (lease.userId as string) : '').then(
      (r) => {
        if (r === 'fenced') {
          this.registered = false;
          this.usersDirty = true;
        }
        return r;
      },
      () => {
        // The heartbeat writes the true count within one beat.
        this.usersDirty = true;
        return 'failed' as const;
      },
    );
  }

  private async beat(): Promise<void> {
    const tracking = this.o.userMaxSessions > 0;
    const deadline = Math.max(this.o.redisTimeoutMs, Math.min(500, Math.floor(this.o.heartbeatMs / 2)));
    try {
      for (let attempt = 0; attempt < 2; attempt++) {
        const sendUsers = tracking && (this.usersDirty || !this.registered || attempt > 0);
        const reply = await withDeadline(
          this.store.heartbeat(
            this.generation,
            this.held,
            this.okReplies,
            this.o.heartbeatTtlMs,
            sendUsers ? new Map(this.users) : null,
            tracking,
          ),
          deadline,
        );
        if (reply.status === 'need_users') continue;
        if (sendUsers) this.usersDirty = false;
        this.lastGlobal = { used: reply.used, capacity: reply.capacity, live: reply.live, at: Date.now() };
        if (reply.status === 'registered') this.o.onEvent({ type: 'registered', generation: reply.generation });
        if (reply.status === 'fenced') this.o.onEvent({ type: 'fenced', generation: reply.generation, held: this.held });
        this.generation = reply.generation;
        this.registered = true;
        if (this.fallbackSince !== null) {
          this.o.onEvent({ type: 'fallback_left', afterMs: Date.now() - this.fallbackSince, held: this.held });
          this.fallbackSince = null;
          this.fallbackReason = null;
        }
        return;
      }
    } catch (err) {
      this.o.onEvent({ type: 'heartbeat_failed', reason: err instanceof Error ? err.message : String(err), kind: redisErrorKind(err) });
      this.enterFallback(err);
    }
  }

  /** Also called on each failure while in fallback: the reason shown is the latest one. */
  private enterFallback(err: unknown): void {
    this.usersDirty = true;
    this.fallbackReason = redisErrorKind(err);
    if (this.fallbackSince !== null) return;
    this.fallbackSince = Date.now();
    this.o.onEvent({ type: 'fallback_entered', reason: err instanceof Error ? err.message : String(err), kind: this.fallbackReason });
  }

  /** Without Redis: 'local' admits up to this instance's share, exact since the budget is per instance. */
  private decideLocally(userId: string | null): AdmitResult {
    switch (this.o.fallback) {
      case 'reject':
        return this.refuse('redis_unavailable', userId);
      case 'admit':
        break;
      case 'local':
        if (this.held + this.pending >= this.o.slotsPerInstance) return this.refuse('dam_full', userId);
        break;
    }
    if (this.o.userMaxSessions > 0 && userId !== null && (this.users.get(userId) ?? 0) >= this.o.userMaxSessions) {
      return this.refuse('user_sessions', userId);
    }
    return { admitted: true, lease: this.take(userId), fallback: true };
  }

  private take(userId: string | null): DamLease {
    this.held++;
    if (this.o.userMaxSessions > 0 && userId !== null) this.users.set(userId, (this.users.get(userId) ?? 0) + 1);
    return new DamLease(this, userId, true);
  }

  private decUser(userId: string): void {
    const n = (this.users.get(userId) ?? 0) - 1;
    if (n > 0) this.users.set(userId, n);
    else this.users.delete(userId);
  }

  /** In shadow mode a refusal is only recorded: the session gets in without a slot. */
  private refuse(reason: RefusalReason, userId: string | null): AdmitResult {
    const fallback = this.fallbackSince !== null;
    const global = this.lastGlobal ?? undefined;
    if (this.o.mode === 'shadow') {
      this.unbudgeted++;
      return { admitted: true, lease: new DamLease(this, userId, false), fallback, shadowRefusal: reason, global };
    }
    return { admitted: false, reason, fallback, global };
  }
}
