import { Inject, Injectable, type OnApplicationBootstrap, type OnModuleDestroy } from '@nestjs/common';
import type { Redis } from 'ioredis';
import { InjectPinoLogger, PinoLogger } from 'nestjs-pino';
import Redlock from 'redlock';
import { AiClient, DeadLetterQueue, QuestionSweeper } from '@traffic-dam/ai-bridge';
import { GATEWAY_CONFIG, type GatewayConfig } from '../common/config/config';
import { INSTANCE_ID } from '../common/instance';
import { REDIS_COMMANDS } from '../common/redis/redis.module';
import { MetricsService } from '../metrics/metrics.service';
import { BreakerService } from './breaker.service';

const LOCK = 'td:sweeper:lock';

/**
 * Hands a dead worker's questions to the living (or dead-letters them), and while the breaker is
 * open dead-letters the questions still queued. Every instance tries each period; the one that
 * takes the redlock sweeps, so one sweeps at a time.
 */
@Injectable()
export class SweeperService implements OnApplicationBootstrap, OnModuleDestroy {
  private readonly sweeper: QuestionSweeper;
  private readonly dlq: DeadLetterQueue;
  private readonly redlock: Redlock;
  private timer: NodeJS.Timeout | null = null;
  private running = false;

  constructor(
    @Inject(GATEWAY_CONFIG) private readonly config: GatewayConfig,
    @Inject(INSTANCE_ID) instanceId: string,
    @Inject(REDIS_COMMANDS) redis: Redis,
    @InjectPinoLogger(SweeperService.name) private readonly logger: PinoLogger,
    private readonly ai: AiClient,
    private readonly metrics: MetricsService,
    private readonly breaker: BreakerService,
  ) {
    this.sweeper = new QuestionSweeper({ redis, questionStream: config.AI_QUESTION_STREAM, by: `sweeper:${instanceId}` });
    this.dlq = new DeadLetterQueue({ redis, questionStream: config.AI_QUESTION_STREAM });
    this.redlock = new Redlock([redis], { retryCount: 0 });
    this.redlock.on('error', () => undefined);
  }

  onApplicationBootstrap(): void {
    this.timer = setInterval(() => void this.tick(), this.config.AI_SWEEP_MS);
    this.timer.unref();
  }

  onModuleDestroy(): void {
    if (this.timer) clearInterval(this.timer);
  }

  private async tick(): Promise<void> {
    if (this.running) return;
    this.running = true;
    // Every instance reads the DLQ size on this timer (one XLEN), so the gauge and its alert work
    // whichever replica Prometheus sees, and /metrics itself never calls Redis.
    try {
      this.metrics.dlqEntries.set(await this.dlq.size());
    } catch {
      // Redis away: keep the last value; the fallback metrics tell that story.
    }
    let lock: Awaited<ReturnType<Redlock['acquire']>> | null = null;
    try {
      lock = await this.redlock.acquire([LOCK], Math.max(500, this.config.AI_SWEEP_MS - 100));
    } catch {
      this.running = false;
      return; // another instance sweeps this round
    }
    try {
      const alive = new Set((await this.ai.liveWorkers()).map((w) => w.workerId));
      const r = await this.sweeper.sweepOnce((consumer) => alive.has(consumer));
      if (r.requeued + r.deadLettered > 0) {
        this.metrics.swept.inc({ action: 'requeued' }, r.requeued);
        this.metrics.swept.inc({ action: 'dead_lettered' }, r.deadLettered);
        this.logger.warn({ sweep: r, dlq: r.deadLettered > 0 }, 'swept the questions of a dead worker');
      }
      // Questions queued while a live worker fails would only wait for a failure or their deadline.
      // Opened because no worker is alive, the queue is kept: a worker that comes back (or the
      // sweep above) answers it within its deadline.
      if (this.breaker.state === 'open' && this.breaker.reason !== 'no_worker' && alive.size > 0) {
        const shed = await this.sweeper.shedQueued();
        if (shed > 0) {
          this.metrics.swept.inc({ action: 'breaker_shed' }, shed);
          this.logger.warn({ shed, dlq: true }, 'breaker open: dead-lettered the questions still queued');
        }
      }
    } catch (err) {
      this.logger.debug({ err: String(err) }, 'sweep failed; the next round tries again');
    } finally {
      this.running = false;
      await lock.release().catch(() => undefined);
    }
  }
}
