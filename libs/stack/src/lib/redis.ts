import { join } from 'node:path';
import { Redis } from 'ioredis';
import { ManagedChild, waitFor } from './child';
import { containerRuntime, loadRedisModule, publishOnLoopback, redisImage, reportTestRedis, testLabels, testRedisMode } from './containers';
import { freePort } from './ports';

export interface RedisHandle {
  url: string;
  port: number;
  /** local: a redis-server child process; container: testcontainers. */
  kind: 'local' | 'container';
  /** Stop the server (SIGTERM). Never throws. */
  stop(): Promise<void>;
  /** Freeze the server, as a hung Redis looks to its clients (SIGSTOP; `pause` for a container). */
  pause(): Promise<void>;
  /** Thaw it after pause(). */
  resume(): Promise<void>;
  /** Local only: the child process, for chaos tests (SIGKILL). */
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
  return {
    url,
    port,
    kind: 'local',
    child,
    stop: () => child.stop(),
    pause: async () => child.signal('SIGSTOP'),
    resume: async () => child.signal('SIGCONT'),
  };
}

/**
 * Redis for tests, by TEST_REDIS (see testRedisMode): in a container through testcontainers
 * (REDIS_IMAGE, published on 127.0.0.1 only), or a local redis-server. Prints which, per suite.
 */
export async function startTestRedis(dir: string): Promise<RedisHandle> {
  const mode = testRedisMode();
  if (mode !== 'local') {
    try {
      const handle = await startRedisContainer();
      reportTestRedis(`container ${redisImage()} (testcontainers) at ${handle.url}`);
      return handle;
    } catch (err) {
      if (mode === 'container') throw new Error(`TEST_REDIS=container: ${(err as Error).message}`);
      reportTestRedis(`local redis-server (no container: ${(err as Error).message.split('\n')[0]})`);
    }
  }
  const handle = await startLocalRedis({ dir });
  if (mode === 'local') reportTestRedis(`local redis-server (TEST_REDIS=local) at ${handle.url}`);
  return handle;
}

async function startRedisContainer(): Promise<RedisHandle> {
  const image = redisImage();
  const client = await containerRuntime(image);
  const { RedisContainer } = loadRedisModule();
  const container = new RedisContainer(image).withLabels(testLabels());
  publishOnLoopback(container);
  const started = await container.start();
  const port = started.getPort();
  const docker = client.container.getById(started.getId());
  let stopped = false;
  return {
    url: `redis://127.0.0.1:${port}`,
    port,
    kind: 'container',
    stop: async () => {
      if (stopped) return;
      stopped = true;
      // A paused container cannot stop; thaw it first (a test that failed mid-pause).
      await docker.unpause().catch(() => undefined);
      await started.stop({ timeout: 2_000 }).catch(() => undefined);
    },
    pause: async () => {
      await docker.pause();
    },
    resume: async () => {
      await docker.unpause();
    },
  };
}
