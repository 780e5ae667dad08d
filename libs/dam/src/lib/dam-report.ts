import type { BudgetStore, GlobalView } from './budget.store';
import { withDeadline } from './deadline';
import type { Heartbeat } from './heartbeat';
import type { LocalHoldings } from './local-holdings';
import type { DamMode, FallbackPolicy, ResolvedDamOptions } from './options';
import type { RedisErrorKind } from './redis-error';
import type { WaitingLine } from './waiting-line';

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

/** What this instance knows without asking Redis: for metrics, read on every scrape. */
export interface DamSnapshot {
  held: number;
  unbudgeted: number;
  fallback: boolean;
  fallbackReason: RedisErrorKind | null;
  global: (GlobalView & { at: number }) | null;
  /** This instance's waiters, the line's length as of the last heartbeat, the measured turnover. */
  line: { waiting: number; length: number; turnoverPerSec: number | null } | null;
  /** Sessions this instance holds per tier. */
  tiers: Array<{ name: string; sessions: number }>;
}

/** The dam's parts a report reads (it changes none of them). */
export interface ReportSources {
  store: Pick<BudgetStore, 'status'>;
  local: Pick<LocalHoldings, 'held' | 'unbudgeted' | 'tiers'>;
  beats: Pick<Heartbeat, 'inFallback' | 'fallbackSince' | 'fallbackReason' | 'lastGlobal' | 'generation'>;
  line: Pick<WaitingLine<never>, 'size' | 'lineLength' | 'turnoverPerSec'> | null;
  tierNames: readonly string[];
}

/** What the dam tells of itself: a snapshot of what it knows, and a status that asks Redis for the whole cluster (bounded). */
export class DamReport {
  constructor(
    private readonly o: ResolvedDamOptions,
    private readonly src: ReportSources,
  ) {}

  snapshot(): DamSnapshot {
    const { local, beats, line, tierNames } = this.src;
    return {
      held: local.held,
      unbudgeted: local.unbudgeted,
      fallback: beats.inFallback,
      fallbackReason: beats.fallbackReason,
      global: beats.lastGlobal,
      line: line ? { waiting: line.size, length: line.lineLength, turnoverPerSec: line.turnoverPerSec } : null,
      tiers: tierNames.map((name, i) => ({ name, sessions: local.tiers.get(i) ?? 0 })),
    };
  }

  async status(): Promise<DamStatus> {
    const { store, local, beats, line, tierNames } = this.src;
    const last = beats.lastGlobal;
    let global: DamStatus['global'] = last ? { ...last, stale: true } : null;
    let tierSessions: ReadonlyMap<number, number> = local.tiers;
    let lineLength = line?.lineLength ?? 0;
    if (this.o.mode !== 'off') {
      try {
        const s = await withDeadline(store.status(), Math.max(this.o.redisDeadline.currentMs, 200));
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
      held: local.held,
      ceiling: this.o.instanceCeiling,
      share: this.o.slotsPerInstance,
      unbudgeted: local.unbudgeted,
      global,
      fallback: { active: beats.inFallback, since: beats.fallbackSince, policy: this.o.fallback, reason: beats.fallbackReason },
      generation: beats.generation,
      line: {
        enabled: line !== null,
        maxWaiters: this.o.line.maxWaiters,
        maxWaitMs: this.o.line.maxWaitMs,
        waitingHere: line?.size ?? 0,
        length: lineLength,
        turnoverPerSec: line?.turnoverPerSec ?? null,
      },
      tiers: tierNames.map((name, i) => ({ name, reservedShare: this.o.tiers[i]?.reservedShare ?? 0, sessions: tierSessions.get(i) ?? 0 })),
    };
  }
}
