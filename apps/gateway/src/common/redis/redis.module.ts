import { Global, Inject, Module, type OnApplicationShutdown } from '@nestjs/common';
import { Redis } from 'ioredis';
import { GATEWAY_CONFIG, type GatewayConfig } from '../config/config';

export const REDIS_COMMANDS = Symbol('REDIS_COMMANDS');
export const REDIS_SUBSCRIBER = Symbol('REDIS_SUBSCRIBER');

function connect(url: string, name: string, commandTimeout: number | undefined, subscriber = false): Redis {
  const client = new Redis(url, {
    connectionName: name,
    // A request must not hang on a dead Redis: fail it and let the caller answer 503.
    commandTimeout,
    // The ready check sends INFO; on a connection that SUBSCRIBEd before it was ready, ioredis
    // then fails with "only subscriber commands may be used" and the gateway does not start.
    enableReadyCheck: !subscriber,
    maxRetriesPerRequest: 1,
    enableOfflineQueue: true,
    retryStrategy: (times) => Math.min(times * 100, 1_000),
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
      useFactory: (c: GatewayConfig) => connect(c.REDIS_URL, 'td-gateway-commands', 2_000),
    },
    {
      provide: REDIS_SUBSCRIBER,
      inject: [GATEWAY_CONFIG],
      // A subscriber runs no other commands; a timeout would only kill the subscription.
      useFactory: (c: GatewayConfig) => connect(c.REDIS_URL, 'td-gateway-subscriber', undefined, true),
    },
  ],
  exports: [REDIS_COMMANDS, REDIS_SUBSCRIBER],
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
