import type { Cluster, Redis } from 'ioredis';
import { ADMIT_LUA, DEREGISTER_LUA, HEARTBEAT_LUA, RELEASE_LUA, STATUS_LUA } from './budget.scripts';

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

/** Most admits (or releases) in one script call. */
const MAX_BATCH = 256;

interface QueuedAdmit {
  generation: string;
  userId: string;
  userMax: number;
  resolve: (r: AdmitReply) => void;
  reject: (err: unknown) => void;
}

interface QueuedRelease {
  generation: string;
  userId: string;
  resolve: (r: 'ok' | 'fenced') => void;
  reject: (err: unknown) => void;
}

interface BudgetCommands {
  tdDamAdmit(...args: Array<string | number>): Promise<[number, number, number, ...string[]]>;
  tdDamRelease(...args: Array<string | number>): Promise<string>;
  tdDamHeartbeat(...args: Array<string | number>): Promise<[string, string, number, number, number]>;
  tdDamStatus(...args: Array<string | number>): Promise<Array<number | string>>;
  tdDamDeregister(...args: Array<string | number>): Promise<string>;
}

/** At most one Redis round trip per call, shared by the calls queued meanwhile: the typed face of budget.scripts.ts. */
export class BudgetStore {
  private readonly redis: (Redis | Cluster) & BudgetCommands;
  private readonly keys: string[];
  readonly userKeyPrefix: string;
  private readonly admits: QueuedAdmit[] = [];
  private readonly releases: QueuedRelease[] = [];
  /** Script calls in flight; while there is one, new admits (releases) queue for the next. */
  private admitCalls = 0;
  private releaseCalls = 0;

  constructor(
    redis: Redis | Cluster,
    private readonly instanceId: string,
    private readonly slots: number,
    keyPrefix: string,
    hashTag: string,
    /** After this many ms a call in flight no longer holds back the next batch. */
    private readonly stallMs: number,
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
    // defineCommand is idempotent per name; EVALSHA with a fallback to EVAL on NOSCRIPT.
    redis.defineCommand('tdDamAdmit', { numberOfKeys: 7, lua: ADMIT_LUA });
    redis.defineCommand('tdDamRelease', { numberOfKeys: 7, lua: RELEASE_LUA });
    redis.defineCommand('tdDamHeartbeat', { numberOfKeys: 7, lua: HEARTBEAT_LUA });
    redis.defineCommand('tdDamStatus', { numberOfKeys: 2, lua: STATUS_LUA });
    redis.defineCommand('tdDamDeregister', { numberOfKeys: 7, lua: DEREGISTER_LUA });
    this.redis = redis as (Redis | Cluster) & BudgetCommands;
  }

  /**
   * Queues one admit. With no admit call in flight it goes at once; otherwise it waits for that
   * call and goes with every admit queued meanwhile, in one script: one round trip per admit at
   * most, and many admits per round trip under load.
   */
  admit(generation: string, userId: string, userMax: number): Promise<AdmitReply> {
    return new Promise<AdmitReply>((resolve, reject) => {
      this.admits.push({ generation, userId, userMax, resolve, reject });
      if (this.admitCalls === 0) this.flushAdmits();
    });
  }

  /** Queues one release, batched like admits. */
  release(generation: string, userId: string): Promise<'ok' | 'fenced'> {
    return new Promise<'ok' | 'fenced'>((resolve, reject) => {
      this.releases.push({ generation, userId, resolve, reject });
      if (this.releaseCalls === 0) this.flushReleases();
    });
  }

  /**
   * Sends every queued admit and release now, before a heartbeat: commands on one connection run
   * in order, so the beat's count then covers exactly what Redis applied before it.
   */
  private flushQueued(): void {
    while (this.admits.length > 0) this.flushAdmits();
    while (this.releases.length > 0) this.flushReleases();
  }

  /**
   * Counts a call in flight until it settles or stallMs passes: a call stuck on a frozen Redis
   * must not hold every later one in the queue (each has its own deadline in the caller).
   */
  private occupy(kind: 'admit' | 'release'): () => void {
    let freed = false;
    const free = (): void => {
      if (freed) return;
      freed = true;
      clearTimeout(timer);
      if (kind === 'admit') {
        if (--this.admitCalls === 0) this.flushAdmits();
      } else if (--this.releaseCalls === 0) this.flushReleases();
    };
    const timer = setTimeout(free, this.stallMs);
    timer.unref();
    if (kind === 'admit') this.admitCalls++;
    else this.releaseCalls++;
    return free;
  }

  private flushAdmits(): void {
    const first = this.admits[0];
    if (!first) return;
    // One batch has one generation and one user limit; the rest waits for the next call.
    let n = 1;
    while (n < this.admits.length && n < MAX_BATCH) {
      const next = this.admits[n] as QueuedAdmit;
      if (next.generation !== first.generation || next.userMax !== first.userMax) break;
      n++;
    }
    const batch = this.admits.splice(0, n);
    const done = this.occupy('admit');
    void this.redis
      .tdDamAdmit(...this.keys, this.instanceId, first.generation, this.slots, first.userMax, ...batch.map((b) => b.userId))
      .then(
        ([used, capacity, live, ...statuses]) => {
          const whole = statuses.length === 1 && statuses[0] === 'fenced';
          batch.forEach((b, i) => {
            b.resolve({ status: (whole ? 'fenced' : statuses[i]) as AdmitStatus, used, capacity, live });
          });
        },
        (err: unknown) => {
          for (const b of batch) b.reject(err);
        },
      )
      .finally(done);
  }

  private flushReleases(): void {
    const first = this.releases[0];
    if (!first) return;
    let n = 1;
    while (n < this.releases.length && n < MAX_BATCH && (this.releases[n] as QueuedRelease).generation === first.generation) n++;
    const batch = this.releases.splice(0, n);
    const done = this.occupy('release');
    void this.redis
      .tdDamRelease(...this.keys, this.instanceId, first.generation, ...batch.map((b) => b.userId))
      .then(
        (r) => {
          for (const b of batch) b.resolve(r as 'ok' | 'fenced');
        },
        (err: unknown) => {
          for (const b of batch) b.reject(err);
        },
      )
      .finally(done);
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
    const [status, gen, used, capacity, live] = await this.redis.tdDamHeartbeat(
      ...this.keys,
      this.instanceId,
      generation,
      this.slots,
      held,
      ttlMs,
      users === null ? '' : JSON.stringify(Object.fromEntries(users)),
      tracking ? '1' : '0',
      this.userKeyPrefix,
      okReplies,
    );
    return { status: status as HeartbeatStatus, generation: gen, used, capacity, live };
  }

  async status(): Promise<StatusReply> {
    const [used, capacity, ...instances] = await this.redis.tdDamStatus(...this.keys.slice(0, 2), '', '', this.slots);
    return { used: Number(used), capacity: Number(capacity), live: instances.length, instances: instances.map(String) };
  }

  async deregister(): Promise<void> {
    await this.redis.tdDamDeregister(...this.keys, this.instanceId);
  }
}
