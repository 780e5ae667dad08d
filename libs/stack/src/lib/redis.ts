import { join } from 'node:path';
import { Redis } from 'ioredis';
import { ManagedChild, waitFor } from './child';
import { freePort } from './ports';

export interface RedisHandle {
  url: string;
  port: number;
  /** local: a redis-server child process; container: testcontainers. */
  kind: 'local' | 'container';
  /** Stop the server (SIGTERM). Tests use pause/resume to simulate an outage. */
  stop(): Promise<void>;
  /** Local only: the child process, for chaos tests (SIGSTOP/SIGKILL). */
  child?: ManagedChild;
}

export async function pingRedis(url: string): Promise<boolean> {
  const client = new Redis(url, {
    lazyConnect: true,
    maxRetriesPerRequest: 0,
    enableOfflineQueue: false,
    retryStrategy: () => null,
    connectTimeout: 500,
  });
  client.on('error', () => undefined);
  try {
    await client.connect();
    return (await client.ping()) === 'PONG';
  } finally {
    client.disconnect();
  }
}

export interface LocalRedisOptions {
  dir: string;
  port?: number;
  echo?: boolean;
  extraArgs?: string[];
}

/** redis-server as a child process on 127.0.0.1, no persistence. */
export async function startLocalRedis(opts: LocalRedisOptions): Promise<RedisHandle> {
  const port = opts.port ?? (await freePort());
  const child = new ManagedChild({
    name: 'redis',
    command: 'redis-server',
    args: [
      '--port', String(port),
      '--bind', '127.0.0.1',
      '--save', '',
      '--appendonly', 'no',
      '--dir', opts.dir,
      '--daemonize', 'no',
      ...(opts.extraArgs ?? []),
    ],
    logFile: join(opts.dir, `redis-${port}.log`),
    echo: opts.echo,
  });
  const url = `redis://127.0.0.1:${port}`;
  await waitFor(`redis on ${port}`, () => pingRedis(url), 10_000, child);
  return { url, port, kind: 'local', child, stop: () => child.stop() };
}

/**
 * Redis for tests: testcontainers where a container runtime answers, else a local redis-server.
 * TEST_REDIS=local|container forces one.
 */
export async function startTestRedis(dir: string): Promise<RedisHandle> {
  const mode = process.env['TEST_REDIS'] ?? 'auto';
  if (mode !== 'local') {
    try {
      const { getContainerRuntimeClient } = await import('testcontainers');
      await getContainerRuntimeClient();
      const { RedisContainer } = await import('@testcontainers/redis');
      const c = await new RedisContainer('redis:7-alpine').start();
      const port = c.getPort();
      return {
        url: `redis://${c.getHost()}:${port}`,
        port,
        kind: 'container',
        stop: async () => {
          await c.stop();
        },
      };
    } catch (err) {
      if (mode === 'container') throw err;
    }
  }
  return startLocalRedis({ dir });
}
