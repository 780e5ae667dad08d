import { Inject, Module, type OnApplicationBootstrap } from '@nestjs/common';
import type { Redis } from 'ioredis';
import { AiClient } from '@traffic-dam/ai-bridge';
import { GATEWAY_CONFIG, type GatewayConfig } from '../common/config/config';
import { INSTANCE_ID } from '../common/instance';
import type { AdaptiveDeadline } from '../common/redis/adaptive-deadline';
import { REDIS_COMMANDS, REDIS_SUBSCRIBER, REQUEST_DEADLINE } from '../common/redis/redis.module';
import { AiCapacityService } from './ai-capacity.service';
import { AiStatus } from './ai-status';
import { BreakerGuard } from './breaker.guard';
import { BreakerService } from './breaker.service';
import { SweeperService } from './sweeper.service';

/**
 * The AI path: the one client to the worker protocol (questions, replies, cancels), the AI gate
 * and the breaker in front of it, and the sweeper of dead workers' questions.
 */
@Module({
  providers: [
    {
      provide: AiClient,
      inject: [GATEWAY_CONFIG, INSTANCE_ID, REDIS_COMMANDS, REDIS_SUBSCRIBER, REQUEST_DEADLINE],
      useFactory: (c: GatewayConfig, instanceId: string, commands: Redis, subscriber: Redis, deadline: AdaptiveDeadline) =>
        new AiClient({
          commands,
          subscriber,
          instanceId,
          questionStream: c.AI_QUESTION_STREAM,
          questionStreamMaxLen: c.AI_QUESTION_STREAM_MAXLEN,
          bound: (call) => deadline.run(call),
        }),
    },
    AiCapacityService,
    BreakerService,
    BreakerGuard,
    SweeperService,
    AiStatus,
  ],
  exports: [AiClient, AiCapacityService, BreakerService, BreakerGuard, AiStatus],
})
export class AiModule implements OnApplicationBootstrap {
  constructor(@Inject(AiClient) private readonly ai: AiClient) {}

  /** Replies for this instance's sessions can come as soon as it takes a question. */
  async onApplicationBootstrap(): Promise<void> {
    await this.ai.connect();
  }
}
