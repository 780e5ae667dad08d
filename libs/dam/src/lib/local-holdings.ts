import type { RefusalReason } from './admission';
import type { ResolvedDamOptions } from './options';

/** What the holdings need of the dam's options. */
export type HoldingsOptions = Pick<ResolvedDamOptions, 'instanceCeiling' | 'slotsPerInstance' | 'fallback' | 'userMaxSessions' | 'tiers'>;

/**
 * What this instance holds, counted exactly without asking Redis: its sessions on the budget
 * (also per tier and per tracked user), the admits it has in flight, and the shadow sessions
 * let in without a slot. The heartbeat sends these counts to heal Redis's; without Redis they
 * decide admissions on the local share.
 */
export class LocalHoldings {
  private heldCount = 0;
  private pendingCount = 0;
  private unbudgetedCount = 0;
  /** Sessions and waiters per tracked user. */
  private readonly users = new Map<string, number>();
  /** Sessions per tier index. */
  private readonly tierCounts = new Map<number, number>();

  constructor(private readonly o: HoldingsOptions) {}

  /** Sessions this instance holds on the budget. */
  get held(): number {
    return this.heldCount;
  }

  /** Sessions admitted without a slot (shadow mode over budget). */
  get unbudgeted(): number {
    return this.unbudgetedCount;
  }

  /** Sessions per tier index; the live counts, not a copy. */
  get tiers(): ReadonlyMap<number, number> {
    return this.tierCounts;
  }

  /** Whether a session that does not wait is refused at once: the held and in-flight admits fill the ceiling. */
  get atCeiling(): boolean {
    return this.heldCount + this.pendingCount >= this.o.instanceCeiling;
  }

  /** Whether this user's sessions are counted (a per-user limit is set and the user is known). */
  tracks(userId: string | null): userId is string {
    return this.o.userMaxSessions > 0 && userId !== null;
  }

  /** An admit went to Redis: until answered(), the ceiling and the local share count it. */
  sent(): void {
    this.pendingCount++;
  }

  /** Its reply came, or it is decided locally after all. */
  answered(): void {
    this.pendingCount--;
  }

  /** A slot for this instance; countUser false for a waiter handed a slot (it was counted when it joined). */
  take(userId: string | null, tier: number, countUser: boolean): void {
    this.heldCount++;
    this.addTier(tier, 1);
    if (countUser && this.tracks(userId)) this.addUser(userId);
  }

  /** Gives a slot back. Returns whether the session's user is tracked (its count went down too). */
  give(userId: string | null, tier: number): boolean {
    this.heldCount--;
    this.addTier(tier, -1);
    const tracked = this.tracks(userId);
    if (tracked) this.decUser(userId);
    return tracked;
  }

  /** A tracked user's request joined the line: a waiter counts as one of the user's sessions. */
  waiterJoined(userId: string): void {
    this.addUser(userId);
  }

  /** A tracked user's waiter left the line without a slot. */
  waiterGone(userId: string): void {
    this.decUser(userId);
  }

  shadowAdmitted(): void {
    this.unbudgetedCount++;
  }

  shadowReleased(): void {
    this.unbudgetedCount--;
  }

  /** Copies of the user and tier counts, for a heartbeat that sends them whole. */
  counts(): { users: Map<string, number>; tiers: Map<number, number> } {
    return { users: new Map(this.users), tiers: new Map(this.tierCounts) };
  }

  /**
   * Without Redis, by the fallback policy: 'local' admits up to this instance's share, exact
   * since the budget is per instance. Returns why not, or null when the session may take a slot.
   */
  decideLocally(userId: string | null, tier: number): RefusalReason | null {
    switch (this.o.fallback) {
      case 'reject':
        return 'redis_unavailable';
      case 'admit':
        break;
      case 'local':
        if (!this.fits(tier, this.o.slotsPerInstance)) return 'dam_full';
        break;
    }
    if (this.tracks(userId) && (this.users.get(userId) ?? 0) >= this.o.userMaxSessions) return 'user_sessions';
    return null;
  }

  /**
   * Whether a session of this tier fits a local budget: as in Redis, the unused part of every
   * higher tier's reserved share of it stays free (exact, since the instance knows its own counts).
   */
  private fits(tier: number, budget: number): boolean {
    let keep = 0;
    for (let h = 0; h < tier; h++) keep += Math.max(0, Math.floor((this.o.tiers[h]?.reservedShare ?? 0) * budget) - (this.tierCounts.get(h) ?? 0));
    return this.heldCount + this.pendingCount + 1 + keep <= budget;
  }

  private addUser(userId: string): void {
    this.users.set(userId, (this.users.get(userId) ?? 0) + 1);
  }

  private decUser(userId: string): void {
    const n = (this.users.get(userId) ?? 0) - 1;
    if (n > 0) this.users.set(userId, n);
    else this.users.delete(userId);
  }

  private addTier(tier: number, d: number): void {
    const n = (this.tierCounts.get(tier) ?? 0) + d;
    if (n > 0) this.tierCounts.set(tier, n);
    else this.tierCounts.delete(tier);
  }
}
