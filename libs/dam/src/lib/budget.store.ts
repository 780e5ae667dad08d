import type { Cluster, Redis } from 'ioredis';
import { budgetDeregister, budgetHeartbeat, budgetOps, budgetStatus, type BudgetKeys } from './budget.scripts';

export type AdmitStatus = 'ok' | 'fenced' | 'dam_full' | 'user_sessions';
export type HeartbeatStatus = 'ok' | 'registered' | 'fenced' | 'need_users';

export interface GlobalView {
  used: number;
  capacity: number;
  live: number;
}

export interface AdmitReply extends GlobalView {
  status: AdmitStatus;
}

export interface HeartbeatReply extends GlobalView {
  status: HeartbeatStatus;
  generation: string;
}

export interface StatusReply extends GlobalView {
  instances: string[];
}

/** Most admits and releases in one script call. */
const MAX_BATCH = 512;

type QueuedOp =
  | { kind: 'admit'; generation: string; userId: string; userMax: number; resolve: (r: AdmitReply) => void; reject: (err: unknown) => void }
  | { kind: 'release'; generation: string; userId: string; resolve: (r: 'ok' | 'fenced') => void; reject: (err: unknown) => void };

/** At most one Redis round trip per call, shared by the calls made in the same turn (budget.scripts.ts has the Lua). */
export class BudgetStore {
  private readonly keys: BudgetKeys;
  readonly userKeyPrefix: string;
  private readonly queue: QueuedOp[] = [];
  private scheduled = false;

  constructor(
    private readonly redis: Redis | Cluster,
    private readonly instanceId: string,
    private readonly slots: number,
    keyPrefix: string,
    hashTag: string,
  ) {
    const base = `${keyPrefix}:{${hashTag}}`;
    this.userKeyPrefix = `${base}:iusers:`;
    this.keys = [
      `${base}:instances`,
      `${base}:held`,
      `${base}:generations`,
      `${base}:users`,
      `${this.userKeyPrefix}${instanceId}`,
      `${base}:generation`,
      `${base}:admits`,
    ];
  }

  /**
   * Queues one admit. Everything queued in the same turn of the event loop goes in one script
   * call at the end of that turn (setImmediate): one round trip per admit at most, many per
   * round trip when requests arrive together, and no admit waits for another's reply.
   */
  admit(generation: string, userId: string, userMax: number): Promise<AdmitReply> {
    return new Promise<AdmitReply>((resolve, reject) => {
      this.queue.push({ kind: 'admit', generation, userId, userMax, resolve, reject });
      this.schedule();
    });
  }

  /** Queues one release, batched with admits. */
  release(generation: string, userId: string): Promise<'ok' | 'fenced'> {
    return new Promise<'ok' | 'fenced'>((resolve, reject) => {
      this.queue.push({ kind: 'release', generation, userId, resolve, reject });
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
    const admits: Array<Extract<QueuedOp, { kind: 'admit' }>> = [];
    let n = 0;
    for (const op of this.queue) {
      if (n >= MAX_BATCH || op.generation !== first.generation) break;
      if (op.kind === 'admit') {
        if (userMax !== null && op.userMax !== userMax) break;
        userMax = op.userMax;
        admits.push(op);
      } else releases.push(op);
      n++;
    }
    this.queue.splice(0, n);
    void budgetOps(this.redis, this.keys, [
      this.instanceId,
      first.generation,
      this.slots,
      userMax ?? 0,
      releases.length,
      ...releases.map((r) => r.userId),
      ...admits.map((a) => a.userId),
    ]).then(
      ([used, capacity, live, released, ...statuses]) => {
        for (const r of releases) r.resolve(released as 'ok' | 'fenced');
        const whole = statuses.length === 1 && statuses[0] === 'fenced';
        admits.forEach((a, i) => {
          a.resolve({ status: (whole ? 'fenced' : statuses[i]) as AdmitStatus, used, capacity, live });
        });
      },
      (err: unknown) => {
        for (const op of [...releases, ...admits]) op.reject(err);
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
    users: Map<string, number> | null,
    tracking: boolean,
  ): Promise<HeartbeatReply> {
    this.flushQueued();
    const [status, gen, used, capacity, live] = await budgetHeartbeat(this.redis, this.keys, [
      this.instanceId,
      generation,
      this.slots,
      held,
      ttlMs,
      users === null ? '' : JSON.stringify(Object.fromEntries(users)),
      tracking ? '1' : '0',
      this.userKeyPrefix,
      okReplies,
    ]);
    return { status: status as HeartbeatStatus, generation: gen, used, capacity, live };
  }

  async status(): Promise<StatusReply> {
    const [used, capacity, ...instances] = await budgetStatus(this.redis, [this.keys[0], this.keys[1]], ['', '', this.slots]);
    return { used: Number(used), capacity: Number(capacity), live: instances.length, instances: instances.map(String) };
  }

  async deregister(): Promise<void> {
    await budgetDeregister(this.redis, this.keys, [this.instanceId]);
  }
}
