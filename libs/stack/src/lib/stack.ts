import { existsSync, mkdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { ManagedChild, httpOk, waitFor } from './child';
import type { EdgeLimits } from './edge-limits';
import { startNginx, type NginxHandle } from './nginx';
import { freePort } from './ports';
import { startLocalRedis, type RedisHandle } from './redis';
import { ensureLocalCertificate, type LocalCertificate } from './tls';

export function repoRoot(from = __dirname): string {
  let dir = resolve(from);
  while (!existsSync(join(dir, 'nx.json'))) {
    const up = dirname(dir);
    if (up === dir) throw new Error('repo root (nx.json) not found');
    dir = up;
  }
  return dir;
}

export interface StackOptions {
  /** Working folder for logs, configs and Redis files. */
  dir: string;
  gateways?: number;
  workers?: number;
  host?: string;
  /** nginx port; 0 picks a free one. */
  port?: number;
  /** Redis port; 0 picks a free one. */
  redisPort?: number;
  /** Use this Redis instead of starting one. */
  redisUrl?: string;
  /** nginx's per-client-IP limits (DESIGN.md layer 1); default off. */
  edge?: EdgeLimits;
  /**
   * HTTPS (and HTTP/2) at the edge with a certificate for the loopback names, signed by a local
   * CA made on first use in `<dir>/tls` (clients trust `stack.certificate.caFile`). Default false.
   */
  tls?: boolean;
  /** Also log the refusals a gateway answered in nginx's access log (npm run access-log reads them). */
  logRefusals?: boolean;
  /** Environment for every gateway and worker (ours is the base). */
  env?: NodeJS.ProcessEnv;
  /** Per-gateway extra environment, by index. */
  gatewayEnv?: (index: number) => NodeJS.ProcessEnv;
  workerEnv?: (index: number) => NodeJS.ProcessEnv;
  echo?: boolean;
}

export interface GatewayHandle {
  index: number;
  port: number;
  url: string;
  child: ManagedChild;
}

export interface WorkerHandle {
  index: number;
  port: number;
  url: string;
  child: ManagedChild;
}

export interface GatewayProcessOptions {
  /** The repo root (dist/apps/gateway/main.js must be built). */
  root: string;
  name: string;
  /** Default: a free port. */
  port?: number;
  /** The whole environment of the process (REDIS_URL and the gateway's settings); HOST and PORT are set here. */
  env: NodeJS.ProcessEnv;
  logFile: string;
  echo?: boolean;
}

/** One built gateway process on 127.0.0.1, resolved once /health/ready answers 200. */
export async function startGatewayProcess(o: GatewayProcessOptions): Promise<Omit<GatewayHandle, 'index'>> {
  const port = o.port ?? (await freePort());
  const child = new ManagedChild({
    name: o.name,
    command: process.execPath,
    args: [join(o.root, 'dist/apps/gateway/main.js')],
    cwd: o.root,
    env: { ...o.env, HOST: '127.0.0.1', PORT: String(port) },
    logFile: o.logFile,
    echo: o.echo,
  });
  const url = `http://127.0.0.1:${port}`;
  await waitFor(o.name, () => httpOk(`${url}/health/ready`), 30_000, child);
  return { port, url, child };
}

/** Starts and restarts the stack's processes; stop() ends every one it started. */
export class Stack {
  redis?: RedisHandle;
  redisUrl = '';
  nginx?: NginxHandle;
  /** The edge's certificate and its CA when `tls` is on. */
  certificate?: LocalCertificate;
  readonly gateways: GatewayHandle[] = [];
  readonly workers: WorkerHandle[] = [];
  readonly root = repoRoot();
  private readonly env: NodeJS.ProcessEnv;

  constructor(readonly opts: StackOptions) {
    mkdirSync(opts.dir, { recursive: true });
    this.env = { ...process.env, ...opts.env };
  }

  get url(): string {
    if (!this.nginx) throw new Error('stack not started');
    return this.nginx.url;
  }

  async start(): Promise<void> {
    const gatewayMain = join(this.root, 'dist/apps/gateway/main.js');
    if (!existsSync(gatewayMain)) throw new Error(`${gatewayMain} is missing: run "npx nx build gateway" first`);
    const python = join(this.root, 'apps/ai-worker/.venv/bin/python');
    if (!existsSync(python)) throw new Error(`${python} is missing: run "bash apps/ai-worker/scripts/setup.sh" first`);
    try {
      if (this.opts.redisUrl) {
        this.redisUrl = this.opts.redisUrl;
      } else {
        this.redis = await startLocalRedis({ dir: this.opts.dir, port: this.opts.redisPort || undefined, echo: false });
        this.redisUrl = this.redis.url;
      }
      const workers = this.opts.workers ?? 1;
      for (let i = 0; i < workers; i++) this.workers.push(await this.startWorker(i));
      const gateways = this.opts.gateways ?? 2;
      const started = await Promise.all(Array.from({ length: gateways }, (_, i) => this.startGateway(i)));
      this.gateways.push(...started);
      const host = this.opts.host ?? '127.0.0.1';
      if (this.opts.tls) this.certificate = await ensureLocalCertificate(join(this.opts.dir, 'tls'));
      const cert = this.certificate;
      this.nginx = await startNginx({
        prefix: join(this.opts.dir, 'nginx'),
        template: join(this.root, 'infra/nginx/nginx.conf.template'),
        webRoot: join(this.root, 'infra/web'),
        listenHost: host,
        listenPort: this.opts.port || (await freePort()),
        upstreams: this.gateways.map((g) => `127.0.0.1:${g.port}`),
        edge: this.opts.edge,
        tls: cert ? { certFile: cert.certFile, keyFile: cert.keyFile, ca: cert.ca } : undefined,
        logRefusals: this.opts.logRefusals,
        echo: this.opts.echo,
      });
    } catch (err) {
      await this.stop();
      throw err;
    }
  }

  async startWorker(index: number, port?: number): Promise<WorkerHandle> {
    const p = port ?? (await freePort());
    const child = new ManagedChild({
      name: `worker${index}`,
      command: join(this.root, 'apps/ai-worker/.venv/bin/python'),
      args: ['-m', 'ai_worker'],
      cwd: join(this.root, 'apps/ai-worker'),
      env: {
        ...this.env,
        REDIS_URL: this.redisUrl,
        WORKER_HOST: '127.0.0.1',
        WORKER_PORT: String(p),
        WORKER_ID: `worker-${index}`,
        ...this.opts.workerEnv?.(index),
      },
      logFile: join(this.opts.dir, `worker${index}.log`),
      echo: this.opts.echo,
    });
    const url = `http://127.0.0.1:${p}`;
    await waitFor(`worker ${index}`, () => httpOk(`${url}/health`), 30_000, child);
    return { index, port: p, url, child };
  }

  async startGateway(index: number, port?: number): Promise<GatewayHandle> {
    const g = await startGatewayProcess({
      root: this.root,
      name: `gateway${index}`,
      port,
      env: { ...this.env, REDIS_URL: this.redisUrl, INSTANCE_NAME: `gw${index}`, ...this.opts.gatewayEnv?.(index) },
      logFile: join(this.opts.dir, `gateway${index}.log`),
      echo: this.opts.echo,
    });
    return { index, ...g };
  }

  /** Stops gateway i (SIGTERM) and starts it again on the same port. */
  async restartGateway(index: number): Promise<GatewayHandle> {
    const g = this.gateways[index];
    if (!g) throw new Error(`no gateway ${index}`);
    await g.child.stop();
    const fresh = await this.startGateway(index, g.port);
    this.gateways[index] = fresh;
    return fresh;
  }

  async restartWorker(index: number): Promise<WorkerHandle> {
    const w = this.workers[index];
    if (!w) throw new Error(`no worker ${index}`);
    await w.child.stop();
    const fresh = await this.startWorker(index, w.port);
    this.workers[index] = fresh;
    return fresh;
  }

  /** Stops everything in reverse order of start; never throws. */
  async stop(): Promise<void> {
    await this.nginx?.stop().catch(() => undefined);
    await Promise.all(this.gateways.map((g) => g.child.stop().catch(() => undefined)));
    await Promise.all(this.workers.map((w) => w.child.stop().catch(() => undefined)));
    await this.redis?.stop().catch(() => undefined);
  }
}
