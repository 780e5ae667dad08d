import type { INestApplicationContext } from '@nestjs/common';
import { IoAdapter } from '@nestjs/platform-socket.io';
import { createAdapter } from '@socket.io/redis-adapter';
import { Redis } from 'ioredis';
import type { Server, ServerOptions } from 'socket.io';
import type { GatewayConfig } from '../common/config/config';

/**
 * Socket.IO on the gateway's HTTP server, WebSocket only (no long-polling, so no sticky routing is
 * needed behind nginx), with the Redis adapter on its own two connections: it carries what must
 * cross instances (a disconnect asked from another instance). Answers never ride it: they come on
 * the instance's reply channel, so the adapter dropping packets while it reconnects loses none.
 */
export class RedisIoAdapter extends IoAdapter {
  private readonly clients: Redis[] = [];

  constructor(
    app: INestApplicationContext,
    private readonly config: GatewayConfig,
  ) {
    super(app);
  }

  override createIOServer(port: number, options?: ServerOptions): Server {
    const server = super.createIOServer(port, {
      ...options,
      transports: ['websocket'],
      // The browser client, /socket.io/socket.io.min.js from the socket.io package: the demo page loads it from here, no CDN.
      serveClient: true,
      // A question is at most BODY_MAX_BYTES over HTTP; a bigger frame closes the connection.
      maxHttpBufferSize: this.config.BODY_MAX_BYTES,
      ...(this.config.CORS_ORIGINS ? { cors: { origin: this.config.CORS_ORIGINS.includes('*') ? '*' : this.config.CORS_ORIGINS } } : {}),
    }) as Server;
    const pub = this.connect('td-gateway-socketio-pub');
    const sub = this.connect('td-gateway-socketio-sub');
    server.adapter(createAdapter(failSoft(pub), failSoft(sub), { key: 'td:socket.io' }));
    return server;
  }

  override async dispose(): Promise<void> {
    await super.dispose();
    for (const c of this.clients) c.disconnect();
  }

  private connect(name: string): Redis {
    // Never fails a queued command: a subscription waits for Redis to come back, then resubscribes.
    const c = new Redis(this.config.REDIS_URL, { connectionName: name, maxRetriesPerRequest: null, retryStrategy: (n) => Math.min(n * 50, 250) });
    c.on('error', () => undefined);
    this.clients.push(c);
    return c;
  }
}

/**
 * The adapter calls its clients fire-and-forget (PUBLISH, SUBSCRIBE): while Redis is away or
 * refuses (NOAUTH), their rejections must not be unhandled, which would end the process. Each
 * call's promise is still returned, so a caller that awaits it sees the error.
 */
function failSoft(redis: Redis): Redis {
  return new Proxy(redis, {
    get(target, prop, receiver) {
      const v: unknown = Reflect.get(target, prop, receiver);
      if (typeof v !== 'function') return v;
      return (...args: unknown[]) => {
        const r: unknown = (v as (...a: unknown[]) => unknown).apply(target, args);
        if (r instanceof Promise) r.catch(() => undefined);
        return r;
      };
    },
  });
}
