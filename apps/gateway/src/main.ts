import 'reflect-metadata';
import cluster from 'node:cluster';
import { ConfigError, loadConfig, type GatewayConfig } from './common/config/config';
import { makeInstanceId } from './common/instance';
import { LifecycleService } from './common/lifecycle.service';
import { createApp } from './app/create-app';

async function runInstance(config: GatewayConfig): Promise<void> {
  const name =
    cluster.isWorker && config.INSTANCE_NAME !== undefined
      ? `${config.INSTANCE_NAME}-w${cluster.worker?.id ?? 0}`
      : config.INSTANCE_NAME;
  const app = await createApp(config, makeInstanceId(name));
  const lifecycle = app.get(LifecycleService);
  // Not Nest's enableShutdownHooks: it destroys modules before the drain would run. Here the
  // whole instance keeps working while it drains; only then does the app close.
  let stopping = false;
  const stop = (signal: NodeJS.Signals): void => {
    if (stopping) return; // a second Ctrl-C does not cut the drain short; SIGKILL does
    stopping = true;
    process.stderr.write(`${JSON.stringify({ level: 30, msg: 'drain started', signal, pid: process.pid })}\n`);
    lifecycle
      .drain('graceful')
      .then(() => app.close())
      .then(
        () => process.exit(0),
        (err: unknown) => {
          process.stderr.write(`gateway shutdown failed: ${err instanceof Error ? err.stack : String(err)}\n`);
          process.exit(1);
        },
      );
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  // Nest hands every argument on to server.listen(port, host, backlog); its types name only two.
  const listen = app.listen.bind(app) as unknown as (port: number, host: string, backlog: number) => Promise<unknown>;
  await listen(config.PORT, config.HOST, config.LISTEN_BACKLOG);
}

/** GATEWAY_WORKERS > 1: the primary only forks; each worker is an instance with its own id. */
function runPrimary(config: GatewayConfig): void {
  let stopping = false;
  for (let i = 0; i < config.GATEWAY_WORKERS; i++) cluster.fork();
  cluster.on('exit', (worker, code, signal) => {
    if (stopping) {
      if (Object.keys(cluster.workers ?? {}).length === 0) process.exit(0);
      return;
    }
    // Exit 0 is a worker drained on its own SIGTERM (a rolling restart of one worker), not a crash.
    const msg = code === 0 ? 'gateway worker drained; starting a new one' : 'gateway worker died; replacing it';
    process.stderr.write(`${JSON.stringify({ level: code === 0 ? 30 : 50, msg, pid: worker.process.pid, code, signal })}\n`);
    cluster.fork();
  });
  for (const sig of ['SIGTERM', 'SIGINT'] as const) {
    process.on(sig, () => {
      stopping = true;
      for (const w of Object.values(cluster.workers ?? {})) w?.process.kill('SIGTERM');
      if (Object.keys(cluster.workers ?? {}).length === 0) process.exit(0);
    });
  }
}

function main(): void {
  let config: GatewayConfig;
  try {
    config = loadConfig(process.env);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`${err.message}\n`);
      process.exit(78); // EX_CONFIG
    }
    throw err;
  }
  if (config.GATEWAY_WORKERS > 1 && cluster.isPrimary) {
    runPrimary(config);
    return;
  }
  runInstance(config).catch((err: unknown) => {
    // ioredis gives up on a Redis that is not there with a stack trace that names no address.
    if (err instanceof Error && err.name === 'MaxRetriesPerRequestError') {
      const at = config.REDIS_URL.replace(/\/\/([^@/]*)@/, '//***@');
      process.stderr.write(
        `gateway failed to start: Redis at ${at} (REDIS_URL) does not answer. Start Redis, or run ` +
          '`npx nx serve gateway` (starts one) or `npm start` (the whole stack).\n',
      );
      process.exit(1);
    }
    process.stderr.write(`gateway failed to start: ${err instanceof Error ? err.stack : String(err)}\n`);
    process.exit(1);
  });
}

main();
