import type { BudgetStore, GlobalView } from './budget.store';
import { withDeadline } from './deadline';
import type { LocalHoldings } from './local-holdings';
import type { ResolvedDamOptions } from './options';
import { redisErrorKind, type RedisErrorKind } from './redis-error';
import type { WaitingLine } from './waiting-line';

/** What a beat reads and tells: the store it beats on, the counts it sends, the line it updates. */
export interface HeartbeatDeps {
  store: Pick<BudgetStore, 'heartbeat' | 'deregister'>;
  local: Pick<LocalHoldings, 'held' | 'counts'>;
  line: Pick<WaitingLine<never>, 'size' | 'onHeartbeat'> | null;
  /** Whether the dam's periodic beat runs: a beat at another instance's expiry is timed only then. */
  ticking: () => boolean;
}

/**
 * This instance's standing in the Redis budget, kept by its heartbeat: its registration (the
 * generation Redis fences stale calls by), its true counts written whole when Redis may have
 * lost them, the global view last seen, and whether it is in the fallback (Redis not answering)
 * and why.
 */
export class Heartbeat {
  private gen = '';
  private isRegistered = false;
  /** Admit replies that said ok, counted as they arrive (even past their deadline). */
  private okReplies = 0;
  /** The user and tier counts must be sent whole with the next heartbeat. */
  private usersDirty = true;
  private since: number | null = null;
  private reason: RedisErrorKind | null = null;
  private global: (GlobalView & { at: number }) | null = null;
  /** An extra beat at another instance's heartbeat expiry, so a dead one is reaped within its TTL. */
  private reapTimer: NodeJS.Timeout | null = null;
  private beating: Promise<void> | null = null;

  constructor(
    private readonly o: ResolvedDamOptions,
    private readonly d: HeartbeatDeps,
  ) {}

  /** The generation this instance is registered under ('' before the first beat answered). */
  get generation(): string {
    return this.gen;
  }

  get registered(): boolean {
    return this.isRegistered;
  }

  get inFallback(): boolean {
    return this.since !== null;
  }

  /** When the fallback began (ms since the epoch), or null while Redis answers. */
  get fallbackSince(): number | null {
    return this.since;
  }

  /** Why the last call to Redis failed while in fallback. */
  get fallbackReason(): RedisErrorKind | null {
    return this.reason;
  }

  get lastGlobal(): (GlobalView & { at: number }) | null {
    return this.global;
  }

  /** An admit reply said ok, or a slot granted to a waiter here was collected. */
  okReply(): void {
    this.okReplies++;
  }

  /** What a reply from Redis said of the whole budget. */
  seen(g: GlobalView): GlobalView & { at: number } {
    this.global = { used: g.used, capacity: g.capacity, live: g.live, at: Date.now() };
    return this.global;
  }

  /** Redis presumed this instance dead (paused or partitioned): the next beat re-registers it with its true counts. */
  fenced(): void {
    this.isRegistered = false;
    this.usersDirty = true;
  }

  /** A call that changed the counts failed: the next beat writes them whole. */
  countsLost(): void {
    this.usersDirty = true;
  }

  /** Also called on each failure while in fallback: the reason shown is the latest one. */
  enterFallback(err: unknown): void {
    this.usersDirty = true;
    this.reason = redisErrorKind(err);
    if (this.since !== null) return;
    this.since = Date.now();
    this.o.onEvent({ type: 'fallback_entered', reason: err instanceof Error ? err.message : String(err), kind: this.reason });
  }

  /** Runs one beat now; concurrent calls share one. */
  run(): Promise<void> {
    this.beating ??= this.beat().finally(() => {
      this.beating = null;
    });
    return this.beating;
  }

  stop(): void {
    if (this.reapTimer) clearTimeout(this.reapTimer);
    this.reapTimer = null;
  }

  /** Leaves the budget (bounded: the instance is stopping), so its slots return before its TTL. */
  async deregister(): Promise<void> {
    if (!this.isRegistered) return;
    await withDeadline(this.d.store.deregister(), 500).catch(() => undefined);
    this.isRegistered = false;
  }

  private async beat(): Promise<void> {
    const { store, local, line } = this.d;
    const tracking = this.o.userMaxSessions > 0;
    const counted = tracking || this.o.tiers.some((t) => t.reservedShare > 0);
    // A slow Redis is not a dead one: a beat may take half the slack the TTL leaves over one
    // period (up to 500 ms) before the instance falls back.
    const atLeast = Math.min(500, Math.floor((this.o.heartbeatTtlMs - this.o.heartbeatMs) / 2));
    try {
      for (let attempt = 0; attempt < 2; attempt++) {
        const sendCounts = counted && (this.usersDirty || !this.isRegistered || attempt > 0);
        // Positions only when waiters are here; a waiter joined after this beat was sent is not asked about.
        const ranked = line !== null && line.size > 0;
        const reply = await this.o.redisDeadline.run(
          store.heartbeat(this.gen, local.held, this.okReplies, this.o.heartbeatTtlMs, sendCounts ? local.counts() : null, tracking, ranked),
          atLeast,
        );
        if (reply.status === 'need_users') continue;
        if (sendCounts) this.usersDirty = false;
        this.seen(reply);
        line?.onHeartbeat({ ...reply, tickets: ranked ? reply.tickets : null });
        this.beatAtExpiry(reply.nextExpiry, reply.now);
        if (reply.status === 'registered') this.o.onEvent({ type: 'registered', generation: reply.generation });
        if (reply.status === 'fenced') this.o.onEvent({ type: 'fenced', generation: reply.generation, held: local.held });
        this.gen = reply.generation;
        this.isRegistered = true;
        if (this.since !== null) {
          this.o.onEvent({ type: 'fallback_left', afterMs: Date.now() - this.since, held: local.held });
          this.since = null;
          this.reason = null;
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
    if (nextExpiry <= 0 || this.reapTimer || !this.d.ticking()) return;
    const inMs = nextExpiry - now + 1;
    if (inMs <= 0 || inMs >= this.o.heartbeatMs) return;
    this.reapTimer = setTimeout(() => {
      this.reapTimer = null;
      void this.run();
    }, inMs);
    this.reapTimer.unref();
  }
}
