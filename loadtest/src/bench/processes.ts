import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import {
  ManagedChild,
  freePort,
  repoRoot,
  startGatewayProcess,
  startLocalRedis,
  startNginx,
  waitFor,
  type EdgeTls,
  type NginxHandle,
  type RedisHandle,
} from '@traffic-dam/stack';

export interface Server {
  name: string;
  url: string;
  port: number;
  pid: number | undefined;
  child: ManagedChild;
}

/** True once anything answers HTTP at url (a bare server in refusal mode answers nothing with 2xx). */
async function answers(url: string): Promise<boolean> {
  const res = await fetch(url, { signal: AbortSignal.timeout(1_000) });
  await res.arrayBuffer();
  return true;
}

/**
 * Every process a benchmark phase needs, started on free loopback ports under one folder, and
 * stopped together: stopAll() ends every one of them (ManagedChild also kills what is left when
 * this process exits).
 */
export class Processes {
  readonly root = repoRoot();
  private readonly children: ManagedChild[] = [];
  private seq = 0;

  constructor(readonly dir: string) {
    mkdirSync(dir, { recursive: true });
  }

  private track(child: ManagedChild): ManagedChild {
    this.children.push(child);
    return child;
  }

  private tsChild(name: string, file: string, env: NodeJS.ProcessEnv): ManagedChild {
    return this.track(
      new ManagedChild({
        name,
        command: process.execPath,
        args: ['--import', 'tsx', join(this.root, 'loadtest/src/bench', file)],
        cwd: this.root,
        env: { ...process.env, TSX_TSCONFIG_PATH: join(this.root, 'loadtest/tsconfig.json'), ...env },
        logFile: join(this.dir, `${name}.log`),
      }),
    );
  }

  async redis(): Promise<RedisHandle> {
    const r = await startLocalRedis({ dir: this.dir });
    if (r.child) this.track(r.child);
    return r;
  }

  /** The benchmark's worker (bench-worker.ts); resolves once its heartbeat is in Redis. */
  async worker(redisUrl: string, env: Record<string, string>): Promise<ManagedChild> {
    const name = `worker${this.seq++}`;
    const child = this.tsChild(name, 'bench-worker.ts', { REDIS_URL: redisUrl, BENCH_WORKER_ID: name, ...env });
    const { Redis } = await import('ioredis');
    const probe = new Redis(redisUrl, { lazyConnect: true, maxRetriesPerRequest: 1 });
    try {
      await probe.connect();
      await waitFor(name, async () => (await probe.exists(`td:workers:${name}`)) === 1, 20_000, child);
    } finally {
      probe.disconnect();
    }
    return child;
  }

  /** One built gateway process with the product's defaults plus `env`. */
  async gateway(redisUrl: string, env: Record<string, string>): Promise<Server> {
    const name = `gateway${this.seq++}`;
    const g = await startGatewayProcess({
      root: this.root,
      name,
      env: { ...process.env, REDIS_URL: redisUrl, INSTANCE_NAME: name, ...env },
      logFile: join(this.dir, `${name}.log`),
    }).catch((err: unknown) => {
      throw new Error(`${name} did not start: ${err instanceof Error ? err.message : String(err)}`);
    });
    this.track(g.child);
    return { name, url: g.url, port: g.port, pid: g.child.pid, child: g.child };
  }

  /** The bare node:http server (bare-server.ts) with `env` (BARE_REFUSAL, BARE_STREAM_HEADERS, REDIS_URL). */
  async bare(env: Record<string, string>): Promise<Server> {
    const name = `bare${this.seq++}`;
    const port = await freePort();
    const child = this.tsChild(name, 'bare-server.ts', { PORT: String(port), ...env });
    const url = `http://127.0.0.1:${port}`;
    await waitFor(name, () => answers(`${url}/health/ready`), 20_000, child);
    return { name, url, port, pid: child.pid, child };
  }

  /** nginx from the stack's template in front of `upstreams`, plain or with TLS. */
  async nginx(upstreams: string[], tls?: EdgeTls & { ca: string }): Promise<NginxHandle> {
    const name = `nginx${this.seq++}`;
    const h = await startNginx({
      prefix: join(this.dir, name),
      template: join(this.root, 'infra/nginx/nginx.conf.template'),
      webRoot: join(this.root, 'infra/web'),
      listenHost: '127.0.0.1',
      listenPort: await freePort(),
      upstreams,
      tls,
    });
    this.track(h.child);
    return h;
  }

  async stop(child: ManagedChild): Promise<void> {
    await child.stop().catch(() => undefined);
  }

  /** Stops every process started here, newest first; never throws. */
  async stopAll(): Promise<void> {
    const all = this.children.splice(0).reverse();
    for (const c of all) await c.stop().catch(() => undefined);
  }
}
