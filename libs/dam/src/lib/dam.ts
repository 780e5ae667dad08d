import type { AdmitOptions, AdmitResult, RefusalReason } from './admission';
import { BudgetStore, type AdmitReply, type GlobalView } from './budget.store';
import { DamLease, type LeaseOwner } from './dam-lease';
import { withDeadline } from './deadline';
import { LocalHoldings } from './local-holdings';
import { resolveDamOptions, type DamMode, type DamOptions, type FallbackPolicy, type ResolvedDamOptions } from './options';
import { WaitingLine } from './waiting-line';
import { redisErrorKind, type RedisErrorKind } from './redis-error';

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
  /** The waiting line: its bounds, this instance's waiters, the line's length and turnover as last seen. */
  line: { enabled: boolean; maxWaiters: number; maxWaitMs: number; waitingHere: number; length: number; turnoverPerSec: number | null };
  /** The tiers, highest first, with their reserved share and sessions (cluster-wide when Redis answered, else this instance's). */
  tiers: Array<{ name: string; reservedShare: number; sessions: number }>;
}

/**
 * The connection gate: a local, exact per-instance ceiling, and the global pooled budget in
 * Redis (slots per instance x live instances), one script per admit and per release (admits
 * and releases made in the same turn of the event loop share one call). A
 * heartbeat keeps this instance alive in the budget and writes its true count, so a lost or
 * doubled update heals within one beat. Without Redis it falls back to its local share.
 */
export class Dam implements LeaseOwner {
  private readonly o: ResolvedDamOptions;
  private readonly store: BudgetStore;
  private readonly local: LocalHoldings;
  /** Admit replies that said ok, counted as they arrive (even past their deadline). */
  private okReplies = 0;
  private readonly tierNames: string[];
  private readonly line: WaitingLine<DamLease> | null;
  private generation = '';
  private registered = false;
  /** The user and tier counts must be sent whole with the next heartbeat. */
  private usersDirty = true;
  private fallbackSince: number | null = null;
  private fallbackReason: RedisErrorKind | null = null;
  private lastGlobal: (GlobalView & { at: number }) | null = null;
  private timer: NodeJS.Timeout | null = null;
  /** An extra beat at another instance's heartbeat expiry, so a dead one is reaped within its TTL. */
  private reapTimer: NodeJS.Timeout | null = null;
  private beating: Promise<void> | null = null;

  constructor(options: DamOptions) {
    this.o = resolveDamOptions(options);
    this.local = new LocalHoldings(this.o);
    this.tierNames = this.o.tiers.length > 0 ? this.o.tiers.map((t) => t.name) : ['default'];
    this.store = new BudgetStore(
      this.o.redis,
      this.o.instanceId,
      { slots: this.o.slotsPerInstance, reserves: this.o.tiers.map((t) => t.reservedShare), maxWaiters: this.o.line.maxWaiters },
      this.o.keyPrefix,
      this.o.hashTag,
    );
    this.line =
      this.o.line.maxWaiters > 0 && this.o.mode === 'enforce'
        ? new WaitingLine<DamLease>(
            {
              leave: (ticket) => this.store.leave(this.generation, ticket),
              collect: () => this.store.collect(this.generation),
              granted: (userId, tier) => {
                this.okReplies++;
                return this.take(userId, tier, false);
              },
              waiterGone: (userId) => {
                if (userId !== null) this.local.waiterGone(userId);
              },
            },
            this.o.instanceId,
            this.o.line,
          )
        : null;
  }

  /** The index of a tier by name; absent or unknown: the last (lowest) tier. */
  tierIndex(name: string | null | undefined): number {
    const i = name ? this.tierNames.indexOf(name) : -1;
    return i >= 0 ? i : this.tierNames.length - 1;
  }

  get mode(): DamMode {
    return this.o.mode;
  }

  get inFallback(): boolean {
    return this.fallbackSince !== null;
  }

  /** Sessions this instance holds on the budget right now. */
  get heldCount(): number {
    return this.local.held;
  }

  /**
   * Whether admit() refuses at once, without asking Redis, because this instance holds its ceiling
   * (enforce mode: shadow admits over it). An edge can answer those refusals before anything else.
   */
  get atCeiling(): boolean {
    return this.o.mode === 'enforce' && this.local.atCeiling;
  }

  /** Registers this instance and starts the heartbeat. Never throws: without Redis it starts in fallback. */
  async start(): Promise<void> {
    if (this.o.mode === 'off' || this.timer) return;
    await this.connected(this.o.heartbeatTtlMs);
    await this.heartbeat();
    this.line?.start(this.o.redis, this.o.line.wakeRedis, this.store.noticesKey);
    this.timer = setInterval(() => {
      this.line?.expire(Date.now());
      void this.heartbeat();
    }, this.o.heartbeatMs);
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
    if (this.reapTimer) clearTimeout(this.reapTimer);
    this.reapTimer = null;
    this.line?.stop();
    if (this.o.mode === 'off' || !this.registered) return;
    await withDeadline(this.store.deregister(), 500).catch(() => undefined);
    this.registered = false;
  }

  /**
   * Admits a session, or refuses it. With `waitMs` (and a line), a full budget queues it instead:
   * the result carries a Waiter whose outcome settles with the lease once a slot is handed to it.
   */
  async admit(userId: string | null = null, opts: AdmitOptions = {}): Promise<AdmitResult> {
    const tier = this.tierIndex(opts.tier);
    if (this.o.mode === 'off') return { admitted: true, lease: this.unbudgetedLease(userId, tier), fallback: false };
    const waitMs = this.line ? Math.min(opts.waitMs ?? 0, this.o.line.maxWaitMs) : 0;
    // The ceiling bounds the sessions an instance takes on at once. A request that offered to wait
    // is decided by the global budget and the line instead, as a slot handed to a waiter is: it
    // turns a connection the instance already holds into a session, so either may take an
    // instance above its ceiling (never the cluster above its capacity). Refused here, a client
    // that asked to wait would meet a 429 while the cluster had room.
    if (waitMs === 0 && this.local.atCeiling) return this.refuse('instance_full', userId, tier);
    // A request that waits asks Redis even in the fallback, and gives it longer: it is willing to
    // wait, and decided locally it would be refused as soon as the local share is full. The
    // fallback exists to keep admissions fast while Redis is slow or away; under a burst that
    // slows Redis past DAM_REDIS_TIMEOUT_MS, waiting clients met 429s instead of the line.
    if (this.fallbackSince !== null && waitMs === 0) return this.decideLocally(userId, tier);
    // A join may wait for its place up to the join timeout; a plain admit has the learnt deadline.
    const joinMs = waitMs > 0 ? Math.min(waitMs, this.o.line.joinTimeoutMs) : 0;
    const tracked = this.local.tracks(userId);
    for (let attempt = 0; attempt < 2; attempt++) {
      const waiter = waitMs > 0 && this.line ? this.line.create(this.tierNames[tier] as string, tier, tracked ? userId : null, waitMs) : null;
      this.local.sent();
      let reply: AdmitReply;
      const raw = this.store.admit(this.generation, {
        userId: tracked ? (userId as string) : '',
        userMax: this.o.userMaxSessions,
        tier,
        ticket: waiter?.ticket ?? '',
        maxAhead: waiter && this.line ? this.line.reachable(waitMs) : -1,
      });
      raw.then(
        (r) => {
          if (r.status === 'ok') this.okReplies++;
        },
        () => undefined,
      );
      try {
        reply = await this.o.redisDeadline.run(raw, joinMs);
      } catch (err) {
        // No longer in flight when decided locally: counted as pending it would take the last slot
        // from itself (the local share would refuse with one slot still free). A join that ran
        // after all is left by the next heartbeat (a ticket nobody here knows).
        this.local.answered();
        if (waiter) this.line?.discard(waiter);
        this.enterFallback(err);
        return this.decideLocally(userId, tier);
      }
      this.local.answered();
      this.lastGlobal = { used: reply.used, capacity: reply.capacity, live: reply.live, at: Date.now() };
      if (waiter && reply.status !== 'queued') this.line?.discard(waiter);
      switch (reply.status) {
        case 'ok':
          return { admitted: true, lease: this.take(userId, tier, true), fallback: false, global: this.lastGlobal };
        case 'queued':
          if (tracked) this.local.waiterJoined(userId as string);
          return { admitted: false, reason: 'queued', waiter: (this.line as WaitingLine<DamLease>).joined(waiter as NonNullable<typeof waiter>, reply.position), fallback: false, global: this.lastGlobal };
        case 'line_full':
          return this.refuse('line_full', userId, tier, this.line?.etaMs(reply.lineLength) ?? null);
        case 'wait_too_long':
          return this.refuse('wait_too_long', userId, tier, this.line?.etaMs(reply.position) ?? null);
        case 'dam_full':
        case 'user_sessions':
          return this.refuse(reply.status, userId, tier);
        case 'fenced':
          // Presumed dead while paused or partitioned: re-register with the true count, then retry once.
          this.registered = false;
          this.usersDirty = true;
          await this.heartbeat();
          if (this.fallbackSince !== null) return this.decideLocally(userId, tier);
          break;
      }
    }
    return this.refuse('dam_full', userId, tier);
  }

  /** Every wait on this instance ends without a slot (reason 'stopped'), out of the line: it is about to stop. */
  endWaits(): void {
    this.line?.endAll('stopped');
  }

  /** What this instance knows without asking Redis: for metrics, read on every scrape. */
  snapshot(): {
    held: number;
    unbudgeted: number;
    fallback: boolean;
    fallbackReason: RedisErrorKind | null;
    global: (GlobalView & { at: number }) | null;
    /** This instance's waiters, the line's length as of the last heartbeat, the measured turnover. */
    line: { waiting: number; length: number; turnoverPerSec: number | null } | null;
    /** Sessions this instance holds per tier. */
    tiers: Array<{ name: string; sessions: number }>;
  } {
    return {
      held: this.local.held,
      unbudgeted: this.local.unbudgeted,
      fallback: this.fallbackSince !== null,
      fallbackReason: this.fallbackReason,
      global: this.lastGlobal,
      line: this.line ? { waiting: this.line.size, length: this.line.lineLength, turnoverPerSec: this.line.turnoverPerSec } : null,
      tiers: this.tierNames.map((name, i) => ({ name, sessions: this.local.tiers.get(i) ?? 0 })),
    };
  }

  async status(): Promise<DamStatus> {
    let global: DamStatus['global'] = this.lastGlobal ? { ...this.lastGlobal, stale: true } : null;
    let tierSessions: ReadonlyMap<number, number> = this.local.tiers;
    let lineLength = this.line?.lineLength ?? 0;
    if (this.o.mode !== 'off') {
      try {
        const s = await withDeadline(this.store.status(), Math.max(this.o.redisDeadline.currentMs, 200));
        global = { used: s.used, capacity: s.capacity, live: s.live, instances: s.instances, stale: false, at: Date.now() };
        if (this.o.tiers.some((t) => t.reservedShare > 0)) tierSessions = s.tiers;
        lineLength = s.lineLength;
      } catch {
        // Redis away: report what we last saw, marked stale.
      }
    }
    return {
      instanceId: this.o.instanceId,
      pid: process.pid,
      mode: this.o.mode,
      held: this.local.held,
      ceiling: this.o.instanceCeiling,
      share: this.o.slotsPerInstance,
      unbudgeted: this.local.unbudgeted,
      global,
      fallback: { active: this.fallbackSince !== null, since: this.fallbackSince, policy: this.o.fallback, reason: this.fallbackReason },
      generation: this.generation,
      line: {
        enabled: this.line !== null,
        maxWaiters: this.o.line.maxWaiters,
        maxWaitMs: this.o.line.maxWaitMs,
        waitingHere: this.line?.size ?? 0,
        length: lineLength,
        turnoverPerSec: this.line?.turnoverPerSec ?? null,
      },
      tiers: this.tierNames.map((name, i) => ({ name, reservedShare: this.o.tiers[i]?.reservedShare ?? 0, sessions: tierSessions.get(i) ?? 0 })),
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
      if (this.o.mode !== 'off') this.local.shadowReleased();
      return;
    }
    const tracked = this.local.give(lease.userId, lease.tierIndex);
    if (this.fallbackSince !== null || !this.registered) return;
    // Nobody waits on a release, so no deadline: one would only turn a late "applied" into a
    // false "failed". The heartbeat that follows on this connection counts it either way.
    lease.confirmation = this.store.release(this.generation, tracked ? (lease.userId as string) : '', lease.tierIndex).then(
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
    const counted = tracking || this.o.tiers.some((t) => t.reservedShare > 0);
    const atLeast = Math.min(500, Math.floor(this.o.heartbeatMs / 2));
    try {
      for (let attempt = 0; attempt < 2; attempt++) {
        const sendCounts = counted && (this.usersDirty || !this.registered || attempt > 0);
        // Positions only when waiters are here; a waiter joined after this beat was sent is not asked about.
        const ranked = this.line !== null && this.line.size > 0;
        const reply = await this.o.redisDeadline.run(
          this.store.heartbeat(
            this.generation,
            this.local.held,
            this.okReplies,
            this.o.heartbeatTtlMs,
            sendCounts ? this.local.counts() : null,
            tracking,
            ranked,
          ),
          atLeast,
        );
        if (reply.status === 'need_users') continue;
        if (sendCounts) this.usersDirty = false;
        this.lastGlobal = { used: reply.used, capacity: reply.capacity, live: reply.live, at: Date.now() };
        this.line?.onHeartbeat({ ...reply, tickets: ranked ? reply.tickets : null });
        this.beatAtExpiry(reply.nextExpiry, reply.now);
        if (reply.status === 'registered') this.o.onEvent({ type: 'registered', generation: reply.generation });
        if (reply.status === 'fenced') this.o.onEvent({ type: 'fenced', generation: reply.generation, held: this.local.held });
        this.generation = reply.generation;
        this.registered = true;
        if (this.fallbackSince !== null) {
          this.o.onEvent({ type: 'fallback_left', afterMs: Date.now() - this.fallbackSince, held: this.local.held });
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

  /**
   * Another instance's heartbeat expires before this one's next beat: beat then too, so an
   * instance that died is reaped (its slots back, its waiters out of the line) within its TTL,
   * not up to a heartbeat later. A live instance beats long before its expiry, so this rarely fires.
   */
  private beatAtExpiry(nextExpiry: number, now: number): void {
    if (nextExpiry <= 0 || this.reapTimer || this.timer === null) return;
    const inMs = nextExpiry - now + 1;
    if (inMs <= 0 || inMs >= this.o.heartbeatMs) return;
    this.reapTimer = setTimeout(() => {
      this.reapTimer = null;
      void this.heartbeat();
    }, inMs);
    this.reapTimer.unref();
  }

  /** Also called on each failure while in fallback: the reason shown is the latest one. */
  private enterFallback(err: unknown): void {
    this.usersDirty = true;
    this.fallbackReason = redisErrorKind(err);
    if (this.fallbackSince !== null) return;
    this.fallbackSince = Date.now();
    this.o.onEvent({ type: 'fallback_entered', reason: err instanceof Error ? err.message : String(err), kind: this.fallbackReason });
  }

  /** Without Redis: decided on what this instance holds, by the fallback policy. */
  private decideLocally(userId: string | null, tier: number): AdmitResult {
    const refused = this.local.decideLocally(userId, tier);
    if (refused !== null) return this.refuse(refused, userId, tier);
    return { admitted: true, lease: this.take(userId, tier, true), fallback: true };
  }

  /** A slot for this instance; countUser false for a waiter handed a slot (it was counted when it joined). */
  private take(userId: string | null, tier: number, countUser: boolean): DamLease {
    this.local.take(userId, tier, countUser);
    return new DamLease(this, userId, true, tier, this.tierNames[tier] as string);
  }

  private unbudgetedLease(userId: string | null, tier: number): DamLease {
    return new DamLease(this, userId, false, tier, this.tierNames[tier] as string);
  }

  /** In shadow mode a refusal is only recorded: the session gets in without a slot. */
  private refuse(reason: RefusalReason, userId: string | null, tier: number, retryAfterMs?: number | null): AdmitResult {
    const fallback = this.fallbackSince !== null;
    const global = this.lastGlobal ?? undefined;
    if (this.o.mode === 'shadow') {
      this.local.shadowAdmitted();
      return { admitted: true, lease: this.unbudgetedLease(userId, tier), fallback, shadowRefusal: reason, global };
    }
    return retryAfterMs === undefined ? { admitted: false, reason, fallback, global } : { admitted: false, reason, fallback, global, retryAfterMs };
  }
}
