import { Inject, Injectable } from '@nestjs/common';
import type { Redis } from 'ioredis';
import { withDeadline } from '@traffic-dam/dam';
import type { BreakerState } from '@traffic-dam/dam';
import { GATEWAY_CONFIG, type GatewayConfig } from '../common/config/config';
import { REDIS_COMMANDS } from '../common/redis/redis.module';
import { AiCapacityService } from './ai-capacity.service';
import { BreakerService } from './breaker.service';

/** The AI path as /dam shows it (and the demo page with it). */
export interface AiStatusView {
  /** What a question asked now would be estimated to wait in the queue, in ms: -1 unknown (no rate), null when Redis did not answer. */
  estimatedWaitMs: number | null;
  /** DAM_MAX_QUEUE_WAIT_MS: a longer estimate is refused with ai_overloaded (0: no gate). */
  maxWaitMs: number;
  /** Questions ahead of a new one (not yet delivered, or delivered and not yet started), or null. */
  queueDepth: number | null;
  liveWorkers: number;
  /** Answers per second the gate counts on. */
  ratePerSec: number;
  /** Answers the workers are streaming now. */
  answering: number;
  breaker: BreakerState;
}

/** Longest /dam waits for the queue's depth. */
const DEPTH_TIMEOUT_MS = 200;

/** Reads the AI gate's inputs as they are now: the workers' view it keeps, the queue's depth from Redis, the breaker. */
@Injectable()
export class AiStatus {
  constructor(
    @Inject(GATEWAY_CONFIG) private readonly config: GatewayConfig,
    @Inject(REDIS_COMMANDS) private readonly redis: Redis,
    private readonly capacity: AiCapacityService,
    private readonly breaker: BreakerService,
  ) {}

  async status(): Promise<AiStatusView> {
    const v = this.capacity.snapshot;
    const pending = await withDeadline(this.waiting(), DEPTH_TIMEOUT_MS).catch(() => null);
    const depth = pending === null ? null : Math.max(0, pending - v.answering);
    return {
      estimatedWaitMs: depth === null ? null : depth === 0 ? 0 : v.rate > 0 ? Math.round((depth * 1_000) / v.rate) : -1,
      maxWaitMs: this.config.DAM_MAX_QUEUE_WAIT_MS,
      queueDepth: depth,
      liveWorkers: v.liveWorkers,
      ratePerSec: v.rate,
      answering: v.answering,
      breaker: this.breaker.state,
    };
  }

  /** The consumer group's undelivered (lag) and unacknowledged (pending) entries, as the gate counts them. */
  private async waiting(): Promise<number> {
    const groups = (await this.redis.xinfo('GROUPS', this.config.AI_QUESTION_STREAM).catch(() => [])) as unknown[][];
    for (const g of groups) {
      const f = new Map<string, unknown>();
      for (let i = 0; i + 1 < g.length; i += 2) f.set(String(g[i]), g[i + 1]);
      if (f.get('name') !== 'workers') continue;
      const lag = f.get('lag');
      const backlog = typeof lag === 'number' ? lag : await this.redis.xlen(this.config.AI_QUESTION_STREAM);
      return backlog + Number(f.get('pending') ?? 0);
    }
    return 0;
  }
}
