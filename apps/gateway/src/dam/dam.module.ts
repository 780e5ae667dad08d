import { Global, Module } from '@nestjs/common';
import { ModuleRef } from '@nestjs/core';
import { Redis } from 'ioredis';
import { Dam, UserRateLimiter } from '@traffic-dam/dam';
import { GATEWAY_CONFIG, type GatewayConfig } from '../common/config/config';
import { DamModePolicy } from '../common/dam-mode.policy';
import { INSTANCE_ID } from '../common/instance';
import { AiModule } from '../ai/ai.module';
import { DamController } from './dam.controller';
import { ADMISSION_REDIS, DAM, DamService, USER_RATE } from './dam.service';

@Global()
@Module({
  imports: [AiModule],
  controllers: [DamController],
  providers: [
    {
      // Its own connection: fails at once while Redis is away (no offline queue) and never
      // re-sends a script after a reconnect, since an admit is not idempotent.
      provide: ADMISSION_REDIS,
      inject: [GATEWAY_CONFIG],
      useFactory: (c: GatewayConfig) => {
        const r = new Redis(c.REDIS_URL, {
          connectionName: 'td-gateway-admission',
          enableOfflineQueue: false,
          autoResendUnfulfilledCommands: false,
          maxRetriesPerRequest: 0,
          retryStrategy: (times) => Math.min(times * 50, 500),
        });
        r.on('error', () => undefined);
        return r;
      },
    },
    {
      provide: DAM,
      inject: [GATEWAY_CONFIG, INSTANCE_ID, ADMISSION_REDIS, ModuleRef, DamModePolicy],
      useFactory: (c: GatewayConfig, instanceId: string, redis: Redis, refs: ModuleRef, policy: DamModePolicy) =>
        new Dam({
          redis,
          instanceId,
          mode: policy.mode,
          slotsPerInstance: c.DAM_SLOTS_PER_INSTANCE,
          instanceCeiling: c.DAM_INSTANCE_CEILING,
          heartbeatMs: c.DAM_HEARTBEAT_MS,
          heartbeatTtlMs: c.DAM_HEARTBEAT_TTL_MS,
          redisTimeoutMs: c.DAM_REDIS_TIMEOUT_MS,
          fallback: c.DAM_REDIS_FALLBACK,
          userMaxSessions: c.DAM_USER_MAX_SESSIONS,
          line: { maxWaiters: c.DAM_QUEUE_MAX, maxWaitMs: c.DAM_QUEUE_MAX_WAIT_MS },
          tiers: c.DAM_TIERS?.map((t) => ({ name: t.name, reservedShare: t.sessions })),
          // Resolved lazily: the service that logs events is built after the dam.
          onEvent: (e) => refs.get(DamService, { strict: false }).onEvent(e),
        }),
    },
    {
      provide: USER_RATE,
      inject: [GATEWAY_CONFIG, ADMISSION_REDIS],
      useFactory: (c: GatewayConfig, redis: Redis) =>
        c.DAM_USER_QUESTIONS > 0
          ? new UserRateLimiter({
              redis,
              points: c.DAM_USER_QUESTIONS,
              windowSec: c.DAM_USER_QUESTION_WINDOW_SEC,
              redisTimeoutMs: c.DAM_REDIS_TIMEOUT_MS,
            })
          : null,
    },
    DamService,
  ],
  exports: [DamService],
})
export class DamModule {}
