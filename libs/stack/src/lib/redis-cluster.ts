import { execFile } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import type { StartedTestContainer } from 'testcontainers';
import { ManagedChild, waitFor } from './child';
import { containerRuntime, loadTestcontainers, redisImage, reportTestRedis, testLabels, testRedisMode } from './containers';
import { freePort } from './ports';
import { pingRedis } from './redis';

export interface RedisClusterHandle {
  /** The masters, in the order they were started. */
  nodes: Array<{ host: string; port: number }>;
  /** local: redis-server child processes; container: one container per node (testcontainers). */
  kind: 'local' | 'container';
  /** Stops every node. Never throws; safe to call twice. */
  stop(): Promise<void>;
}

export interface LocalRedisClusterOptions {
  /** Each node gets <dir>/node-<port>/ (data, nodes-<port>.conf, redis-<port>.log). */
  dir: string;
  /** Number of masters, no replicas. redis-cli needs at least 3. Default 3. */
  masters?: number;
  echo?: boolean;
}

const HOST = '127.0.0.1';
/** The cluster bus listens on the client port + 10000. */
const BUS_OFFSET = 10_000;
const PORT_ATTEMPTS = 50;
const NODE_START_ATTEMPTS = 5;
const CREATE_TIMEOUT_MS = 20_000;
const CLUSTER_OK_TIMEOUT_MS = 20_000;

/**
 * A real Redis Cluster of `masters` redis-server child processes on 127.0.0.1 (no replicas, no
 * persistence), created with `redis-cli --cluster create`. Resolves once every node reports
 * cluster_state:ok and knows every other node. If anything fails, what was started is stopped.
 */
export async function startLocalRedisCluster(opts: LocalRedisClusterOptions): Promise<RedisClusterHandle> {
  const masters = opts.masters ?? 3;
  if (!Number.isInteger(masters) || masters < 3) {
    throw new Error(`startLocalRedisCluster: masters must be an integer >= 3 (redis-cli needs 3), got ${masters}`);
  }
  mkdirSync(opts.dir, { recursive: true });

  const children: ManagedChild[] = [];
  const stopAll = async (): Promise<void> => {
    await Promise.allSettled(children.map((c) => c.stop()));
  };

  try {
    const used = new Set<number>();
    const ports: number[] = [];
    for (let i = 0; i < masters; i++) {
      const { port, child } = await startNode(opts, used);
      children.push(child);
      ports.push(port);
    }
    const logs = children.map((c) => c.opts.logFile);

    await createCluster(opts.dir, ports, logs, (args) => runHostCli(args));
    await waitClusterOk(ports, () => children.find((c) => !c.running)?.opts.logFile, logs);

    return {
      nodes: ports.map((port) => ({ host: HOST, port })),
      kind: 'local',
      stop: stopAll,
    };
  } catch (err) {
    await stopAll();
    throw err;
  }
}

/** Starts one node on a port P where P and P + 10000 were free; retries when the node exits early. */
function startNode(opts: LocalRedisClusterOptions, used: Set<number>): Promise<{ port: number; child: ManagedChild }> {
  return onPortPair(used, async (port) => {
    const nodeDir = join(opts.dir, `node-${port}`);
    const child = new ManagedChild({
      name: `redis-${port}`,
      command: 'redis-server',
      args: [...nodeArgs(port), '--dir', nodeDir, '--daemonize', 'no'],
      // ManagedChild creates the log file's directory, which is also the node's --dir.
      logFile: join(nodeDir, `redis-${port}.log`),
      echo: opts.echo,
    });
    try {
      await waitFor(`redis cluster node on ${port}`, () => pingRedis(`redis://${HOST}:${port}`), 10_000, child);
      return { port, child };
    } catch (err) {
      const exitedEarly = !child.running;
      await child.stop();
      // Exited early: most likely someone took one of the two ports meanwhile. Try other ports.
      if (exitedEarly) return new Retry(err);
      throw err;
    }
  });
}

/** A cluster node's redis-server arguments on `port` (its bus on port + 10000). */
function nodeArgs(port: number): string[] {
  return [
    '--port', String(port),
    '--bind', HOST,
    '--cluster-enabled', 'yes',
    '--cluster-config-file', `nodes-${port}.conf`,
    '--cluster-node-timeout', '2000',
    '--save', '',
    '--appendonly', 'no',
  ];
}

/** A node that could not start on its ports, with why: try others. */
class Retry {
  constructor(readonly error: unknown) {}
}

/**
 * Runs start(P) on a port pair P, P + 10000 free right now (marked used), and on other pairs
 * while it asks to retry: someone may take a port between the check and the bind.
 */
async function onPortPair<T>(used: Set<number>, start: (port: number) => Promise<T | Retry>): Promise<T> {
  let lastError: unknown;
  for (let attempt = 0; attempt < NODE_START_ATTEMPTS; attempt++) {
    const port = await pickPortPair(used);
    used.add(port);
    used.add(port + BUS_OFFSET);
    const r = await start(port);
    if (!(r instanceof Retry)) return r;
    lastError = r.error;
  }
  throw lastError;
}

/** A port P such that P and P + 10000 both accept a bind on 127.0.0.1 right now. */
async function pickPortPair(used: Set<number>): Promise<number> {
  for (let i = 0; i < PORT_ATTEMPTS; i++) {
    const port = await freePort();
    const bus = port + BUS_OFFSET;
    if (bus > 65_535 || used.has(port) || used.has(bus)) continue;
    if ((await canBind(port)) && (await canBind(bus))) return port;
  }
  throw new Error(`startLocalRedisCluster: found no free port P with P+${BUS_OFFSET} free in ${PORT_ATTEMPTS} tries`);
}

function canBind(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.unref();
    srv.once('error', () => resolve(false));
    srv.listen(port, HOST, () => {
      srv.close(() => resolve(true));
    });
  });
}

type CliRun = (args: string[]) => Promise<{ failed: string | null; output: string }>;

/** redis-cli on this machine. */
function runHostCli(args: string[]): ReturnType<CliRun> {
  return new Promise((resolve) => {
    execFile(
      'redis-cli',
      args,
      { timeout: CREATE_TIMEOUT_MS, killSignal: 'SIGKILL', maxBuffer: 4 * 1024 * 1024 },
      (error, stdout, stderr) => resolve({ failed: error ? error.message.split('\n')[0] ?? 'failed' : null, output: `${String(stdout)}${String(stderr)}` }),
    );
  });
}

/** `redis-cli --cluster create … --cluster-replicas 0 --cluster-yes`; output kept in <dir>/cluster-create.log. */
async function createCluster(dir: string, ports: number[], logs: string[], run: CliRun): Promise<void> {
  const args = [
    '--cluster', 'create',
    ...ports.map((p) => `${HOST}:${p}`),
    '--cluster-replicas', '0',
    '--cluster-yes',
  ];
  const logFile = join(dir, 'cluster-create.log');
  const result = await run(args);
  writeFileSync(logFile, `$ redis-cli ${args.join(' ')}\n${result.output}`);
  // redis-cli exits 0 on success; it also prints [ERR] lines for failures it does not exit on.
  if (result.failed || /\[ERR\]/.test(result.output)) {
    const tail = result.output.trim().split('\n').slice(-10).join('\n');
    throw new Error(
      `redis-cli --cluster create failed (${result.failed ?? '[ERR] in output'}); ` +
        `see ${logFile} and ${logs.join(', ')}\n${tail}`,
    );
  }
}

/**
 * Until CLUSTER INFO on every node says cluster_state:ok with all slots and all nodes known.
 * `exited` names the log of a node that died, if one did.
 */
async function waitClusterOk(ports: number[], exited: () => string | undefined, logs: string[]): Promise<void> {
  const clients = ports.map((port) => {
    const c = new Redis({
      host: HOST,
      port,
      lazyConnect: true,
      maxRetriesPerRequest: 0,
      connectTimeout: 500,
      retryStrategy: () => 100,
    });
    c.on('error', () => undefined);
    return c;
  });
  const last = new Map<number, string>();
  try {
    const until = Date.now() + CLUSTER_OK_TIMEOUT_MS;
    for (;;) {
      const dead = exited();
      if (dead) throw new Error(`redis cluster: a node exited during startup; see ${dead}`);
      const states = await Promise.all(
        clients.map(async (client, i) => {
          try {
            if (client.status === 'wait') await client.connect();
            const info = String(await client.call('CLUSTER', 'INFO'));
            const field = (name: string): string | undefined =>
              new RegExp(`^${name}:(\\S+)`, 'm').exec(info)?.[1];
            const summary = `state=${field('cluster_state')} slots=${field('cluster_slots_assigned')} known=${field('cluster_known_nodes')}`;
            last.set(ports[i], summary);
            return (
              field('cluster_state') === 'ok' &&
              field('cluster_slots_assigned') === '16384' &&
              field('cluster_known_nodes') === String(ports.length)
            );
          } catch (err) {
            last.set(ports[i], `error: ${(err as Error).message}`);
            return false;
          }
        }),
      );
      if (states.every(Boolean)) return;
      if (Date.now() >= until) {
        const detail = ports.map((p) => `${p}: ${last.get(p) ?? 'no answer'}`).join('; ');
        throw new Error(
          `redis cluster not ok within ${CLUSTER_OK_TIMEOUT_MS} ms (${detail}); see ${logs.join(', ')}`,
        );
      }
      await sleep(100);
    }
  } finally {
    for (const c of clients) c.disconnect();
  }
}

/**
 * The Redis Cluster for tests, by TEST_REDIS (see testRedisMode): one container per node, else
 * local redis-server processes. Prints which, per suite.
 */
export async function startTestRedisCluster(opts: LocalRedisClusterOptions): Promise<RedisClusterHandle> {
  const mode = testRedisMode();
  if (mode !== 'local') {
    try {
      const handle = await startContainerCluster(opts);
      reportTestRedis(`cluster of ${handle.nodes.length} containers ${redisImage()} (testcontainers, host network) on 127.0.0.1:${handle.nodes.map((n) => n.port).join(',')}`);
      return handle;
    } catch (err) {
      if (mode === 'container') throw new Error(`TEST_REDIS=container: ${(err as Error).message}`);
      reportTestRedis(`cluster of local redis-server processes (no container: ${(err as Error).message.split('\n')[0]})`);
    }
  }
  const handle = await startLocalRedisCluster(opts);
  if (mode === 'local') reportTestRedis(`cluster of ${handle.nodes.length} local redis-server processes (TEST_REDIS=local)`);
  return handle;
}

/**
 * Each node a container on the host's network, bound to 127.0.0.1: a node announces one address
 * for its clients and its peers alike, and on a bridge network no address serves both the
 * host's client (a published port) and the other nodes (the bridge).
 */
async function startContainerCluster(opts: LocalRedisClusterOptions): Promise<RedisClusterHandle> {
  const masters = opts.masters ?? 3;
  if (!Number.isInteger(masters) || masters < 3) {
    throw new Error(`startTestRedisCluster: masters must be an integer >= 3 (redis-cli needs 3), got ${masters}`);
  }
  mkdirSync(opts.dir, { recursive: true });
  const image = redisImage();
  await containerRuntime(image);
  const { GenericContainer, Wait } = loadTestcontainers();
  const nodes: StartedTestContainer[] = [];
  const stopAll = async (): Promise<void> => {
    await Promise.allSettled(nodes.splice(0).map((c) => c.stop({ timeout: 2_000 })));
  };
  try {
    const used = new Set<number>();
    const ports: number[] = [];
    for (let i = 0; i < masters; i++) {
      const started = await onPortPair(used, async (port) => {
        try {
          const node = await new GenericContainer(image)
            .withNetworkMode('host')
            .withLabels(testLabels())
            .withCommand(['redis-server', ...nodeArgs(port)])
            .withWaitStrategy(Wait.forLogMessage('Ready to accept connections'))
            .withStartupTimeout(30_000)
            .start();
          return { node, port };
        } catch (err) {
          // Most likely someone took one of the two ports meanwhile: try other ports.
          return new Retry(err);
        }
      });
      nodes.push(started.node);
      ports.push(started.port);
    }
    const first = nodes[0] as StartedTestContainer;
    const logs = nodes.map((n) => `container ${n.getId().slice(0, 12)}`);
    await createCluster(opts.dir, ports, logs, async (args) => {
      const r = await first.exec(['redis-cli', ...args]);
      return { failed: r.exitCode === 0 ? null : `exit ${r.exitCode}`, output: r.output };
    });
    await waitClusterOk(ports, () => undefined, logs);
    return { nodes: ports.map((port) => ({ host: HOST, port })), kind: 'container', stop: stopAll };
  } catch (err) {
    await stopAll();
    throw err;
  }
}
