import { Module } from '@nestjs/common';
import type { Redis } from 'ioredis';
import { AiBridgeClient, AiBridgeTransport } from '@traffic-dam/ai-bridge';
import { GATEWAY_CONFIG, type GatewayConfig } from '../common/config/config';
import { INSTANCE_ID } from '../common/instance';
import { REDIS_COMMANDS, REDIS_SUBSCRIBER } from '../common/redis/redis.module';
import { ChatController } from './chat.controller';
import { ChatService } from './chat.service';
import { AiCapacityService } from '../ai/ai-capacity.service';
import { BreakerService } from '../ai/breaker.service';
import { SweeperService } from '../ai/sweeper.service';
import { SessionRepository } from './session.repository';
import { SessionDrainer } from './session-drain';

@Module({
  controllers: [ChatController],
  providers: [
    ChatService,
    SessionDrainer,
    SessionRepository,
    AiCapacityService,
    BreakerService,
    SweeperService,
    {
      provide: AiBridgeClient,
      inject: [GATEWAY_CONFIG, INSTANCE_ID, REDIS_COMMANDS, REDIS_SUBSCRIBER],
      useFactory: (c: GatewayConfig, instanceId: string, commands: Redis, subscriber: Redis) =>
        new AiBridgeClient({
          commands,
          subscriber,
          instanceId,
          questionStream: c.AI_QUESTION_STREAM,
          questionStreamMaxLen: c.AI_QUESTION_STREAM_MAXLEN,
        }),
    },
    { provide: AiBridgeTransport, inject: [AiBridgeClient], useFactory: (bridge: AiBridgeClient) => new AiBridgeTransport(bridge) },
  ],
})
export class ChatModule {}
