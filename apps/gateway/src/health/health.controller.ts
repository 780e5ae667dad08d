import { Controller, Get, Inject, Res } from '@nestjs/common';
import type { Response } from 'express';
import type { Redis } from 'ioredis';
import { INSTANCE_ID } from '../common/instance';
import { REDIS_COMMANDS } from '../common/redis/redis.module';
import { LifecycleService } from '../common/lifecycle.service';

@Controller('health')
export class HealthController {
  constructor(
    @Inject(INSTANCE_ID) private readonly instanceId: string,
    @Inject(REDIS_COMMANDS) private readonly redis: Redis,
    private readonly lifecycle: LifecycleService,
  ) {}

  @Get('live')
  live(): { status: 'ok'; instanceId: string; pid: number } {
    return { status: 'ok', instanceId: this.instanceId, pid: process.pid };
  }

  /** Ready means: Redis answers within 500 ms and the instance is not draining. */
  @Get('ready')
  async ready(@Res() res: Response): Promise<void> {
    const redisOk = await Promise.race([
      this.redis.ping().then(
        (r) => r === 'PONG',
        () => false,
      ),
      new Promise<boolean>((resolve) => setTimeout(resolve, 500, false).unref()),
    ]);
    const draining = this.lifecycle.draining;
    const ready = redisOk && !draining;
    res.status(ready ? 200 : 503).json({ status: ready ? 'ready' : 'not_ready', instanceId: this.instanceId, redis: redisOk, draining });
  }
}
