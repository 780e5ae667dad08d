// node --expose-gc: hosts one gateway (the built dist/apps/gateway/main.js) in this process, so
// its heap can be read after a full GC, while another process holds the streams. Prints one JSON
// line: the gateway's heap and RSS per admitted session and per waiting stream, Redis's memory
// per waiter (the line's own share: libs/dam/bench/line-memory.bench.ts).
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { freePort, httpOk, repoRoot, waitFor } from '@traffic-dam/stack';

const gc = (globalThis as unknown as { gc?: () => void }).gc;

async function settled(): Promise<{ heap: number; rss: number }> {
  if (!gc) throw new Error('run with node --expose-gc');
  for (let i = 0; i < 3; i++) {
    gc();
    await new Promise((r) => setTimeout(r, 200));
  }
  const m = process.memoryUsage();
  return { heap: m.heapUsed, rss: m.rss };
}

function hold(url: string, n: number): Promise<ChildProcess> {
  const child = spawn(process.execPath, ['--import', 'tsx', join(__dirname, 'hold-streams.ts'), url, String(n)], {
    stdio: ['ignore', 'pipe', 'inherit'],
    env: { ...process.env, TSX_TSCONFIG_PATH: 'loadtest/tsconfig.json' },
  });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('streams not held within 120 s')), 120_000);
    child.stdout?.on('data', (d: Buffer) => {
      if (d.toString().includes('ready')) {
        clearTimeout(timer);
        resolve(child);
      }
    });
  });
}

async function usedMemory(redis: Redis): Promise<number> {
  return Number(/used_memory:(\d+)/.exec(await redis.info('memory'))?.[1] ?? NaN);
}

async function main(): Promise<void> {
  const [redisUrl, count] = [process.argv[2] as string, Number(process.argv[3])];
  const port = await freePort();
  Object.assign(process.env, {
    REDIS_URL: redisUrl,
    PORT: String(port),
    LOG_LEVEL: 'silent',
    DAM_SLOTS_PER_INSTANCE: String(count),
    DAM_QUEUE_MAX: String(4 * count),
    INSTANCE_NAME: 'probe',
  });
  require(join(repoRoot(__dirname), 'dist/apps/gateway/main.js'));
  const url = `http://127.0.0.1:${port}`;
  await waitFor('the gateway', () => httpOk(`${url}/health/ready`), 30_000);
  const redis = new Redis(redisUrl);
  const idle = await settled();
  const r0 = await usedMemory(redis);
  const sessions = await hold(`${url}/chat/stream`, count);
  const withSessions = await settled();
  const r1 = await usedMemory(redis);
  const waiters = await hold(`${url}/chat/stream?wait=600`, count);
  const withWaiters = await settled();
  const r2 = await usedMemory(redis);
  sessions.kill('SIGKILL');
  waiters.kill('SIGKILL');

  const per = (a: number, b: number, n: number) => Math.round((b - a) / n);
  process.stdout.write(
    `${JSON.stringify({
      streams: count,
      gatewayHeapPerSession: per(idle.heap, withSessions.heap, count),
      gatewayHeapPerWaiter: per(withSessions.heap, withWaiters.heap, count),
      gatewayRssPerSession: per(idle.rss, withSessions.rss, count),
      gatewayRssPerWaiter: per(withSessions.rss, withWaiters.rss, count),
      redisPerSession: per(r0, r1, count),
      redisPerWaiter: per(r1, r2, count),
    })}\n`,
  );
  process.exit(0);
}

main().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
