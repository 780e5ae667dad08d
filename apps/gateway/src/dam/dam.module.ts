import { Global, Module } from '@nestjs/common';
import { ModuleRef } from '@nestjs/core';
import { Redis } from 'ioredis';
import { AdaptiveDeadline, Dam, UserRateLimiter } from '@traffic-dam/dam';
import { GATEWAY_CONFIG, type GatewayConfig } from '../common/config/config';
import { DamModePolicy } from '../common/dam-mode.policy';
import { INSTANCE_ID } from '../common/instance';
import { AiModule } from '../ai/ai.module';
import { DamController } from './dam.controller';
import { ADMISSION_REDIS, DAM, DamService, USER_RATE } from './dam.service';

/** The deadline of the dam's Redis calls on the admission connection: symbol and cap (ms). */
const ADMISSION_DEADLINE = Symbol('ADMISSION_DEADLINE');
const ADMISSION_DEADLINE_CAP_MS = 1_000;

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
      // The admissions' and the per-user rate's deadline on that connection: at least
      // DAM_REDIS_TIMEOUT_MS, raised by the round trips measured there (a loaded machine), at most 1 s.
      provide: ADMISSION_DEADLINE,
      inject: [GATEWAY_CONFIG],
      useFactory: (c: GatewayConfig) => new AdaptiveDeadline(c.DAM_REDIS_TIMEOUT_MS, Math.max(c.DAM_REDIS_TIMEOUT_MS, ADMISSION_DEADLINE_CAP_MS)),
    },
    {
      provide: DAM,
      inject: [GATEWAY_CONFIG, INSTANCE_ID, ADMISSION_REDIS, ModuleRef, DamModePolicy, ADMISSION_DEADLINE],
      useFactory: (c: GatewayConfig, instanceId: string, redis: Redis, refs: ModuleRef, policy: DamModePolicy, deadline: AdaptiveDeadline) =>
        new Dam({
          redis,
          instanceId,
          mode: policy.mode,
          slotsPerInstance: c.DAM_SLOTS_PER_INSTANCE,
          instanceCeiling: c.DAM_INSTANCE_CEILING,
          heartbeatMs: c.DAM_HEARTBEAT_MS,
          heartbeatTtlMs: c.DAM_HEARTBEAT_TTL_MS,
          redisTimeoutMs: c.DAM_REDIS_TIMEOUT_MS,
          redisDeadline: deadline,
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
      inject: [GATEWAY_CONFIG, ADMISSION_REDIS, ADMISSION_DEADLINE],
      useFactory: (c: GatewayConfig, redis: Redis, deadline: AdaptiveDeadline) =>
        c.DAM_USER_QUESTIONS > 0
          ? new UserRateLimiter({
              redis,
              points: c.DAM_USER_QUESTIONS,
              windowSec: c.DAM_USER_QUESTION_WINDOW_SEC,
              redisDeadline: deadline,
            })
          : null,
    },
    DamService,
  ],
  exports: [DamService],
})
export class DamModule {}
