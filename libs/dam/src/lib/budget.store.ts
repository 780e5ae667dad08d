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

interface BudgetCommands {
  tdDamAdmit(...args: Array<string | number>): Promise<[string, number, number, number]>;
  tdDamRelease(...args: Array<string | number>): Promise<string>;
  tdDamHeartbeat(...args: Array<string | number>): Promise<[string, string, number, number, number]>;
  tdDamStatus(...args: Array<string | number>): Promise<Array<number | string>>;
  tdDamDeregister(...args: Array<string | number>): Promise<string>;
}

/** One Redis round trip per call: the typed face of budget.scripts.ts. */
export class BudgetStore {
  private readonly redis: (Redis | Cluster) & BudgetCommands;
  private readonly keys: string[];
  readonly userKeyPrefix: string;

  constructor(
    redis: Redis | Cluster,
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
    // defineCommand is idempotent per name; EVALSHA with a fallback to EVAL on NOSCRIPT.
    redis.defineCommand('tdDamAdmit', { numberOfKeys: 7, lua: ADMIT_LUA });
    redis.defineCommand('tdDamRelease', { numberOfKeys: 7, lua: RELEASE_LUA });
    redis.defineCommand('tdDamHeartbeat', { numberOfKeys: 7, lua: HEARTBEAT_LUA });
    redis.defineCommand('tdDamStatus', { numberOfKeys: 2, lua: STATUS_LUA });
    redis.defineCommand('tdDamDeregister', { numberOfKeys: 7, lua: DEREGISTER_LUA });
    this.redis = redis as (Redis | Cluster) & BudgetCommands;
  }

  async admit(generation: string, userId: string, userMax: number): Promise<AdmitReply> {
    const [status, used, capacity, live] = await this.redis.tdDamAdmit(
      ...this.keys,
      this.instanceId,
      generation,
      this.slots,
      userId,
      userMax,
    );
    return { status: status as AdmitStatus, used, capacity, live };
  }

  async release(generation: string, userId: string): Promise<'ok' | 'fenced'> {
    return (await this.redis.tdDamRelease(...this.keys, this.instanceId, generation, userId)) as 'ok' | 'fenced';
  }

  async heartbeat(
    generation: string,
    held: number,
    okReplies: number,
    ttlMs: number,
    users: Map<string, number> | null,
    tracking: boolean,
  ): Promise<HeartbeatReply> {
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
