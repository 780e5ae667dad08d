// `npx nx serve gateway [--watch]` runs this after the build: one gateway in the foreground, with
// what it needs. Redis: REDIS_URL when set (it must answer), else one on 127.0.0.1:6379 when it
// answers, else a redis-server child on a free port. The AI worker: reused when one heartbeats in
// that Redis, else started from apps/ai-worker/.venv. Whatever is missing and cannot be started
// is said in one line, with the command to run. --watch rebuilds on a change to the gateway's or
// its libraries' sources and restarts the gateway. Ctrl-C stops what this started.
import { spawnSync } from 'node:child_process';
import { existsSync, watch, type FSWatcher } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { ManagedChild, freePort, httpOk, pingRedis, repoRoot, startLocalRedis, waitFor, type RedisHandle } from './index';

const root = repoRoot();
const dir = join(root, '.stack/serve');
const watchMode = process.argv.includes('--watch');
const say = (msg: string): void => void process.stdout.write(`serve: ${msg}\n`);

function fail(msg: string): never {
  process.stderr.write(`serve: ${msg}\n`);
  process.exit(1);
}

/** redis://:secret@host -> redis://:***@host, for messages. */
function redact(url: string): string {
  return url.replace(/\/\/([^@/]*)@/, '//***@');
}

function portFree(port: number, host: string): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.once('error', () => resolve(false));
    srv.listen(port, host, () => srv.close(() => resolve(true)));
  });
}

async function redisFor(): Promise<{ url: string; started?: RedisHandle }> {
  const explicit = process.env['REDIS_URL'];
  const url = explicit || 'redis://127.0.0.1:6379';
  if (await pingRedis(url).catch(() => false)) {
    say(`Redis: ${redact(url)} (reused)`);
    return { url };
  }
  if (explicit) fail(`Redis at ${redact(explicit)} (REDIS_URL) does not answer or refuses the password: start it, or unset REDIS_URL and this starts one`);
  if (spawnSync('redis-server', ['--version']).status !== 0) {
    fail('no Redis on 127.0.0.1:6379 and redis-server is not installed: sudo apt-get install -y redis-server (or `npm start`, which sets up the whole stack)');
  }
  const started = await startLocalRedis({ dir });
  say(`Redis: started ${started.url} (stops with this)`);
  return { url: started.url, started };
}

async function workerFor(redisUrl: string): Promise<ManagedChild | undefined> {
  const probe = new Redis(redisUrl, { lazyConnect: true, maxRetriesPerRequest: 1 });
  probe.on('error', () => undefined);
  try {
    await probe.connect();
    const [, beats] = await probe.scan('0', 'MATCH', 'td:workers:*', 'COUNT', 1000);
    if (beats.length > 0) {
      say(`AI worker: ${beats.length} heartbeating in that Redis (reused)`);
      return undefined;
    }
  } finally {
    probe.disconnect();
  }
  const python = join(root, 'apps/ai-worker/.venv/bin/python');
  if (!existsSync(python)) {
    say('AI worker: none, and no venv to start one; questions answer 503 ai_unavailable until one runs: bash apps/ai-worker/scripts/setup.sh');
    return undefined;
  }
  const port = await freePort();
  const child = new ManagedChild({
    name: 'worker',
    command: python,
    args: ['-m', 'ai_worker'],
    cwd: join(root, 'apps/ai-worker'),
    env: { ...process.env, REDIS_URL: redisUrl, WORKER_HOST: '127.0.0.1', WORKER_PORT: String(port), WORKER_ID: 'serve-worker' },
    logFile: join(dir, 'worker.log'),
  });
  await waitFor('worker', () => httpOk(`http://127.0.0.1:${port}/health`), 30_000, child);
  say(`AI worker: started on http://127.0.0.1:${port} (log ${join(dir, 'worker.log')}; stops with this)`);
  return child;
}

async function startGateway(redisUrl: string, host: string, port: number): Promise<ManagedChild> {
  const child = new ManagedChild({
    name: 'gateway',
    command: process.execPath,
    args: ['--enable-source-maps', join(root, 'dist/apps/gateway/main.js')],
    cwd: root,
    env: { ...process.env, REDIS_URL: redisUrl, HOST: host, PORT: String(port) },
    logFile: join(dir, 'gateway.log'),
    echo: true,
  });
  await waitFor('gateway', () => httpOk(`http://${host}:${port}/health/ready`), 30_000, child);
  return child;
}

function rebuild(): boolean {
  const r = spawnSync(process.execPath, [join(root, 'apps/gateway/scripts/build.mjs')], { cwd: root, stdio: 'inherit' });
  return r.status === 0;
}

async function main(): Promise<void> {
  const host = process.env['HOST'] || '127.0.0.1';
  const port = Number(process.env['PORT'] || 3000);
  if (!existsSync(join(root, 'dist/apps/gateway/main.js'))) fail('dist/apps/gateway/main.js is missing: npx nx build gateway');
  if (!(await portFree(port, host))) fail(`${host}:${port} is in use (another gateway or npm start?): PORT=${port + 1} npx nx serve gateway`);

  const { url: redisUrl, started: redis } = await redisFor();
  const worker = await workerFor(redisUrl);
  let gateway = await startGateway(redisUrl, host, port);
  let stopping = false;
  let watchers: FSWatcher[] = [];
  const stop = async (why: string): Promise<void> => {
    if (stopping) return;
    stopping = true;
    for (const w of watchers) w.close();
    say(`${why}: stopping the gateway${worker ? ', the worker' : ''}${redis ? ' and Redis' : ''}`);
    await gateway.stop(30_000);
    await worker?.stop();
    await redis?.stop();
    process.exit(0);
  };
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(sig, () => void stop(sig));
  say(`gateway: http://${host}:${port} (docs /docs, status /dam); Ctrl-C stops it${watchMode ? '; rebuilds and restarts on a change' : ''}`);

  if (!watchMode) {
    const code = await gateway.wait();
    if (!stopping) {
      process.stderr.write(`serve: the gateway exited (${code}); see ${gateway.opts.logFile}\n`);
      await worker?.stop();
      await redis?.stop();
      process.exit(code ?? 1);
    }
    return;
  }

  let timer: NodeJS.Timeout | undefined;
  let busy = false;
  let again = false;
  const onChange = async (): Promise<void> => {
    if (busy) {
      again = true;
      return;
    }
    busy = true;
    do {
      again = false;
      say('change seen: rebuilding');
      if (!rebuild()) {
        say('build failed; the running gateway stays');
        continue;
      }
      await gateway.stop(30_000);
      if (stopping) return;
      try {
        gateway = await startGateway(redisUrl, host, port);
        say(`gateway restarted: http://${host}:${port}`);
      } catch (err) {
        say(`the new gateway did not start (${(err as Error).message}); fix and save again`);
      }
    } while (again && !stopping);
    busy = false;
  };
  watchers = ['apps/gateway/src', 'libs/dam/src', 'libs/ai-bridge/src', 'libs/redis-script/src'].map((d) =>
    watch(join(root, d), { recursive: true }, (_event, file) => {
      if (!file || !/\.ts$/.test(file) || /\.(spec|integration-spec|e2e-spec)\.ts$/.test(file)) return;
      clearTimeout(timer);
      timer = setTimeout(() => void onChange(), 300);
    }),
  );
}

void main().catch((err: unknown) => fail((err as Error).message));
