import { Global, Inject, Module, type OnApplicationShutdown } from '@nestjs/common';
import { Redis } from 'ioredis';
import { PinoLogger } from 'nestjs-pino';
import { MetricsService } from '../../metrics/metrics.service';
import { GATEWAY_CONFIG, type GatewayConfig } from '../config/config';
import { AdaptiveDeadline } from './adaptive-deadline';
import { RedisFailures } from './redis-failures';

export const REDIS_COMMANDS = Symbol('REDIS_COMMANDS');
export const REDIS_SUBSCRIBER = Symbol('REDIS_SUBSCRIBER');
/** The deadline of Redis calls on a request path (see adaptive-deadline.ts). */
export const REQUEST_DEADLINE = Symbol('REQUEST_DEADLINE');

/** Longest a request waits for one Redis call, however slow Redis has been lately, in ms. */
const REQUEST_DEADLINE_CAP_MS = 1_000;

export function connectRedis(url: string, name: string, commandTimeout: number | undefined, subscriber = false): Redis {
  const client = new Redis(url, {
    connectionName: name,
    // A request must not hang on a dead Redis: fail it and let the caller answer 503.
    commandTimeout,
    // The ready check sends INFO; on a connection that SUBSCRIBEd before it was ready, ioredis
    // then fails with "only subscriber commands may be used" and the gateway does not start.
    enableReadyCheck: !subscriber,
    maxRetriesPerRequest: 1,
    enableOfflineQueue: true,
    // Reconnect often: clean-up waiting for Redis goes out as soon as it is back.
    retryStrategy: (times) => Math.min(times * 50, 250),
  });
  // Errors surface on the commands that fail; the event only needs a listener.
  client.on('error', () => undefined);
  return client;
}

@Global()
@Module({
  providers: [
    {
      provide: REDIS_COMMANDS,
      inject: [GATEWAY_CONFIG],
      useFactory: (c: GatewayConfig) => connectRedis(c.REDIS_URL, 'td-gateway-commands', 2_000),
    },
    {
      provide: REDIS_SUBSCRIBER,
      inject: [GATEWAY_CONFIG],
      // A subscriber runs no other commands; a timeout would only kill the subscription.
      useFactory: (c: GatewayConfig) => connectRedis(c.REDIS_URL, 'td-gateway-subscriber', undefined, true),
    },
    {
      provide: REQUEST_DEADLINE,
      inject: [GATEWAY_CONFIG],
      useFactory: (c: GatewayConfig) => new AdaptiveDeadline(c.REDIS_REQUEST_TIMEOUT_MS, Math.max(c.REDIS_REQUEST_TIMEOUT_MS, REQUEST_DEADLINE_CAP_MS)),
    },
    {
      provide: RedisFailures,
      inject: [MetricsService, PinoLogger],
      useFactory: (metrics: MetricsService, logger: PinoLogger) => {
        logger.setContext(RedisFailures.name);
        return new RedisFailures(metrics.redisErrors, logger);
      },
    },
  ],
  exports: [REDIS_COMMANDS, REDIS_SUBSCRIBER, REQUEST_DEADLINE, RedisFailures],
})
export class RedisModule implements OnApplicationShutdown {
  constructor(
    @Inject(REDIS_COMMANDS) private readonly commands: Redis,
    @Inject(REDIS_SUBSCRIBER) private readonly subscriber: Redis,
  ) {}

  onApplicationShutdown(): void {
    this.commands.disconnect();
    this.subscriber.disconnect();
  }
}
