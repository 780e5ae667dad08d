import type { AdmitOptions, AdmitResult, RefusalReason } from './admission';
import { BudgetStore, type AdmitReply } from './budget.store';
import { DamLease, type LeaseOwner } from './dam-lease';
import { DamReport, type DamSnapshot, type DamStatus } from './dam-report';
import { Heartbeat } from './heartbeat';
import { LocalHoldings } from './local-holdings';
import { resolveDamOptions, type DamMode, type DamOptions, type ResolvedDamOptions } from './options';
import { WaitingLine } from './waiting-line';
import { whenReady } from './when-ready';

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
  private readonly tierNames: string[];
  private readonly line: WaitingLine<DamLease> | null;
  private readonly beats: Heartbeat;
  private readonly report: DamReport;
  private timer: NodeJS.Timeout | null = null;

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
              leave: (ticket) => this.store.leave(this.beats.generation, ticket),
              collect: () => this.store.collect(this.beats.generation),
              granted: (userId, tier) => {
                this.beats.okReply();
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
    this.beats = new Heartbeat(this.o, { store: this.store, local: this.local, line: this.line, ticking: () => this.timer !== null });
    this.report = new DamReport(this.o, { store: this.store, local: this.local, beats: this.beats, line: this.line, tierNames: this.tierNames });
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
    return this.beats.inFallback;
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
    // The admission connection has no offline queue: a beat sent before it is ready would fail.
    await whenReady(this.o.redis, this.o.heartbeatTtlMs);
    await this.heartbeat();
    this.line?.start(this.o.redis, this.o.line.wakeRedis, this.store.noticesKey);
    this.timer = setInterval(() => {
      this.line?.expire(Date.now());
      void this.heartbeat();
    }, this.o.heartbeatMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    this.beats.stop();
    this.line?.stop();
    if (this.o.mode === 'off') return;
    await this.beats.deregister();
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
    if (this.beats.inFallback && waitMs === 0) return this.decideLocally(userId, tier);
    // A join may wait for its place up to the join timeout; a plain admit has the learnt deadline.
    const joinMs = waitMs > 0 ? Math.min(waitMs, this.o.line.joinTimeoutMs) : 0;
    const tracked = this.local.tracks(userId);
    for (let attempt = 0; attempt < 2; attempt++) {
      const waiter = waitMs > 0 && this.line ? this.line.create(this.tierNames[tier] as string, tier, tracked ? userId : null, waitMs) : null;
      this.local.sent();
      let reply: AdmitReply;
      const raw = this.store.admit(this.beats.generation, {
        userId: tracked ? (userId as string) : '',
        userMax: this.o.userMaxSessions,
        tier,
        ticket: waiter?.ticket ?? '',
        maxAhead: waiter && this.line ? this.line.reachable(waitMs) : -1,
      });
      raw.then(
        (r) => {
          if (r.status === 'ok') this.beats.okReply();
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
        this.beats.enterFallback(err);
        return this.decideLocally(userId, tier);
      }
      this.local.answered();
      const global = this.beats.seen(reply);
      if (waiter && reply.status !== 'queued') this.line?.discard(waiter);
      switch (reply.status) {
        case 'ok':
          return { admitted: true, lease: this.take(userId, tier, true), fallback: false, global };
        case 'queued':
          if (tracked) this.local.waiterJoined(userId as string);
          return { admitted: false, reason: 'queued', waiter: (this.line as WaitingLine<DamLease>).joined(waiter as NonNullable<typeof waiter>, reply.position), fallback: false, global };
        case 'line_full':
          return this.refuse('line_full', userId, tier, this.line?.etaMs(reply.lineLength) ?? null);
        case 'wait_too_long':
          return this.refuse('wait_too_long', userId, tier, this.line?.etaMs(reply.position) ?? null);
        case 'dam_full':
        case 'user_sessions':
          return this.refuse(reply.status, userId, tier);
        case 'fenced':
          // Presumed dead while paused or partitioned: re-register with the true count, then retry once.
          this.beats.fenced();
          await this.heartbeat();
          if (this.beats.inFallback) return this.decideLocally(userId, tier);
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
  snapshot(): DamSnapshot {
    return this.report.snapshot();
  }

  status(): Promise<DamStatus> {
    return this.report.status();
  }

  /** Runs one heartbeat now (the timer runs them every heartbeatMs); concurrent calls share one. */
  heartbeat(): Promise<void> {
    if (this.o.mode === 'off') return Promise.resolve();
    return this.beats.run();
  }

  /** @internal called by DamLease.release */
  onRelease(lease: DamLease): void {
    if (!lease.budgeted) {
      if (this.o.mode !== 'off') this.local.shadowReleased();
      return;
    }
    const tracked = this.local.give(lease.userId, lease.tierIndex);
    if (this.beats.inFallback || !this.beats.registered) return;
    // Nobody waits on a release, so no deadline: one would only turn a late "applied" into a
    // false "failed". The heartbeat that follows on this connection counts it either way.
    lease.confirmation = this.store.release(this.beats.generation, tracked ? (lease.userId as string) : '', lease.tierIndex).then(
      (r) => {
        if (r === 'fenced') this.beats.fenced();
        return r;
      },
      () => {
        // The heartbeat writes the true count within one beat.
        this.beats.countsLost();
        return 'failed' as const;
      },
    );
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
    const fallback = this.beats.inFallback;
    const global = this.beats.lastGlobal ?? undefined;
    if (this.o.mode === 'shadow') {
      this.local.shadowAdmitted();
      return { admitted: true, lease: this.unbudgetedLease(userId, tier), fallback, shadowRefusal: reason, global };
    }
    return retryAfterMs === undefined ? { admitted: false, reason, fallback, global } : { admitted: false, reason, fallback, global, retryAfterMs };
  }
}
