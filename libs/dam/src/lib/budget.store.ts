import type { Cluster, Redis } from 'ioredis';
import { budgetDeregister, budgetHeartbeat, budgetOps, budgetStatus, type BudgetKeys } from './budget.scripts';

export type AdmitStatus = 'ok' | 'fenced' | 'dam_full' | 'user_sessions';
export type HeartbeatStatus = 'ok' | 'registered' | 'fenced' | 'need_users';
/** What became of a ticket that left the line (see LEAVE in line.lua.ts). */
export type LeaveStatus = 'left' | 'released' | 'shed' | 'gone' | 'fenced';

export interface GlobalView {
  used: number;
  capacity: number;
  live: number;
}

export type AdmitReply = GlobalView &
  (
    | { status: AdmitStatus }
    /** Joined the line at this position (1 = next). */
    | { status: 'queued'; position: number }
    /** Not queued: the line holds its most waiters (lineLength), or the wait would be too long (position). */
    | { status: 'line_full'; lineLength: number }
    | { status: 'wait_too_long'; position: number }
  );

/** A ticket's state as a heartbeat reads it: its position, or an outcome not collected yet. */
export type TicketState = number | 'g' | 'x';

export interface HeartbeatReply extends GlobalView {
  status: HeartbeatStatus;
  generation: string;
  /** Slots freed in the cluster since the budget began (a counter, for the turnover rate). */
  freed: number;
  lineLength: number;
  /** Redis's clock, ms. */
  now: number;
  /** Outcomes of this instance's tickets waiting to be collected (a wake-up may have been missed). */
  outcomes: number;
  /** This instance's tickets that Redis knows (when asked for). */
  tickets: Map<string, TicketState>;
  /** When the next other instance's heartbeat expires (Redis clock, ms; 0: no other instance). */
  nextExpiry: number;
}

export interface StatusReply extends GlobalView {
  instances: string[];
  lineLength: number;
  /** Sessions per tier index. */
  tiers: Map<number, number>;
  freed: number;
  now: number;
}

/** What the budget's scripts need besides the keys: constant for a dam. */
export interface BudgetParams {
  slots: number;
  /** Reserved share of the budget per tier, highest first. */
  reserves: readonly number[];
  /** Most waiters in the line (0: no line). */
  maxWaiters: number;
}

export interface AdmitRequest {
  userId: string;
  userMax: number;
  tier: number;
  /** '' for an admit that does not wait. */
  ticket: string;
  /** Most waiters ahead it accepts (-1: any). */
  maxAhead: number;
}

/** Most ops in one script call. */
const MAX_BATCH = 512;

type QueuedOp =
  | ({ kind: 'admit'; generation: string; resolve: (r: AdmitReply) => void; reject: (err: unknown) => void } & AdmitRequest)
  | { kind: 'release'; generation: string; userId: string; tier: number; resolve: (r: 'ok' | 'fenced') => void; reject: (err: unknown) => void }
  | { kind: 'leave'; generation: string; ticket: string; resolve: (r: LeaveStatus) => void; reject: (err: unknown) => void }
  | { kind: 'collect'; generation: string; resolve: (r: Array<[ticket: string, outcome: 'g' | 'x']>) => void; reject: (err: unknown) => void };

/** At most one Redis round trip per call, shared by the calls made in the same turn (budget.scripts.ts has the Lua). */
export class BudgetStore {
  private readonly keys: BudgetKeys;
  /** Every key starts with it; the per-instance keys of others are derived from it in Lua. */
  readonly base: string;
  /** The list this instance's blocking pop waits on for a wake-up (a slot was granted, a ticket shed). */
  readonly noticesKey: string;
  private readonly reserves: string;
  private readonly queue: QueuedOp[] = [];
  private scheduled = false;

  constructor(
    private readonly redis: Redis | Cluster,
    private readonly instanceId: string,
    private readonly params: BudgetParams,
    keyPrefix: string,
    hashTag: string,
  ) {
    const base = `${keyPrefix}:{${hashTag}}`;
    this.base = base;
    this.noticesKey = `${base}:notices:${instanceId}`;
    this.reserves = params.reserves.length > 0 ? params.reserves.join(',') : '0';
    this.keys = [
      `${base}:instances`,
      `${base}:held`,
      `${base}:generations`,
      `${base}:users`,
      `${base}:iusers:${instanceId}`,
      `${base}:generation`,
      `${base}:admits`,
      `${base}:line`,
      `${base}:arrivals`,
      `${base}:iline:${instanceId}`,
      `${base}:outcomes:${instanceId}`,
      `${base}:grants`,
      `${base}:tiers`,
      `${base}:itiers:${instanceId}`,
      `${base}:freed`,
    ];
  }

  /**
   * Queues one admit. Everything queued in the same turn of the event loop goes in one script
   * call at the end of that turn (setImmediate): one round trip per admit at most, many per
   * round trip when requests arrive together, and no admit waits for another's reply.
   */
  admit(generation: string, req: AdmitRequest): Promise<AdmitReply> {
    return new Promise<AdmitReply>((resolve, reject) => {
      this.queue.push({ kind: 'admit', generation, ...req, resolve, reject });
      this.schedule();
    });
  }

  /** Queues one release, batched with admits. */
  release(generation: string, userId: string, tier: number): Promise<'ok' | 'fenced'> {
    return new Promise<'ok' | 'fenced'>((resolve, reject) => {
      this.queue.push({ kind: 'release', generation, userId, tier, resolve, reject });
      this.schedule();
    });
  }

  /** Queues a ticket's leave: out of the line at once, or its granted slot passed on. */
  leave(generation: string, ticket: string): Promise<LeaveStatus> {
    return new Promise<LeaveStatus>((resolve, reject) => {
      this.queue.push({ kind: 'leave', generation, ticket, resolve, reject });
      this.schedule();
    });
  }

  /** Queues a collect of this instance's outcomes (granted slots, shed tickets). */
  collect(generation: string): Promise<Array<[ticket: string, outcome: 'g' | 'x']>> {
    return new Promise((resolve, reject) => {
      this.queue.push({ kind: 'collect', generation, resolve, reject });
      this.schedule();
    });
  }

  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      this.flushQueued();
    });
  }

  /** Sends the queued ops that share the first one's generation (and user limit) in one call. */
  private flush(): void {
    const first = this.queue[0];
    if (!first) return;
    let userMax: number | null = null;
    const releases: Array<Extract<QueuedOp, { kind: 'release' }>> = [];
    const leaves: Array<Extract<QueuedOp, { kind: 'leave' }>> = [];
    const collects: Array<Extract<QueuedOp, { kind: 'collect' }>> = [];
    const admits: Array<Extract<QueuedOp, { kind: 'admit' }>> = [];
    let n = 0;
    for (const op of this.queue) {
      if (n >= MAX_BATCH || op.generation !== first.generation) break;
      if (op.kind === 'admit') {
        if (userMax !== null && op.userMax !== userMax) break;
        userMax = op.userMax;
        admits.push(op);
      } else if (op.kind === 'release') releases.push(op);
      else if (op.kind === 'leave') leaves.push(op);
      else collects.push(op);
      n++;
    }
    this.queue.splice(0, n);
    const args: Array<string | number> = [];
    for (const r of releases) args.push(r.userId, r.tier);
    for (const l of leaves) args.push(l.ticket);
    for (const a of admits) args.push(a.userId, a.tier, a.ticket, a.maxAhead);
    void budgetOps(this.redis, this.keys, [
      this.instanceId,
      first.generation,
      this.params.slots,
      userMax ?? 0,
      this.base,
      this.reserves,
      this.params.maxWaiters,
      releases.length,
      leaves.length,
      collects.length > 0 ? '1' : '0',
      ...args,
    ]).then(
      ([used, capacity, live, released, leaveStatuses, collected, statuses]) => {
        for (const r of releases) r.resolve(released as 'ok' | 'fenced');
        leaves.forEach((l, i) => l.resolve((leaveStatuses[i] ?? 'gone') as LeaveStatus));
        const outcomes: Array<[string, 'g' | 'x']> = [];
        for (let i = 0; i + 1 < collected.length; i += 2) outcomes.push([collected[i] as string, collected[i + 1] as 'g' | 'x']);
        collects.forEach((c, i) => c.resolve(i === 0 ? outcomes : []));
        const whole = statuses.length === 1 && statuses[0] === 'fenced';
        admits.forEach((a, i) => a.resolve(admitReply(whole ? 'fenced' : (statuses[i] as string), { used, capacity, live })));
      },
      (err: unknown) => {
        for (const op of [...releases, ...leaves, ...collects, ...admits]) op.reject(err);
      },
    );
  }

  /**
   * Sends every queued op now, before a heartbeat: commands on one connection run in order, so
   * the beat's count then covers exactly what Redis applied before it.
   */
  private flushQueued(): void {
    while (this.queue.length > 0) this.flush();
  }

  async heartbeat(
    generation: string,
    held: number,
    okReplies: number,
    ttlMs: number,
    counts: { users: Map<string, number>; tiers: Map<number, number> } | null,
    tracking: boolean,
    ranks: boolean,
  ): Promise<HeartbeatReply> {
    this.flushQueued();
    const [status, gen, used, capacity, live, freed, lineLength, now, outcomes, raw, nextExpiry] = await budgetHeartbeat(this.redis, this.keys, [
      this.instanceId,
      generation,
      this.params.slots,
      held,
      this.base,
      counts === null ? '' : JSON.stringify(Object.fromEntries(counts.users)),
      tracking ? '1' : '0',
      ttlMs,
      okReplies,
      this.reserves,
      counts === null ? '' : JSON.stringify(Object.fromEntries(counts.tiers)),
      ranks ? '1' : '0',
    ]);
    const tickets = new Map<string, TicketState>();
    for (let i = 0; i + 1 < raw.length; i += 2) {
      const v = raw[i + 1];
      tickets.set(String(raw[i]), typeof v === 'number' ? v : (v as 'g' | 'x'));
    }
    return { status: status as HeartbeatStatus, generation: gen, used, capacity, live, freed, lineLength, now, outcomes, tickets, nextExpiry };
  }

  async status(): Promise<StatusReply> {
    const [used, capacity, instances, lineLength, tierPairs, freed, now] = await budgetStatus(this.redis, this.keys, ['', '', this.params.slots, '', this.base]);
    const tiers = new Map<number, number>();
    for (let i = 0; i + 1 < tierPairs.length; i += 2) tiers.set(Number(tierPairs[i]), Number(tierPairs[i + 1]));
    return { used, capacity, live: instances.length, instances: instances.map(String), lineLength, tiers, freed, now };
  }

  async deregister(): Promise<void> {
    await budgetDeregister(this.redis, this.keys, [this.instanceId, '', this.params.slots, '', this.base, this.reserves]);
  }
}

function admitReply(status: string, g: GlobalView): AdmitReply {
  const [kind, n] = status.split(':') as [string, string | undefined];
  switch (kind) {
    case 'q':
      return { ...g, status: 'queued', position: Number(n) };
    case 'full':
      return { ...g, status: 'line_full', lineLength: Number(n) };
    case 'long':
      return { ...g, status: 'wait_too_long', position: Number(n) };
    default:
      return { ...g, status: kind as AdmitStatus };
  }
}
