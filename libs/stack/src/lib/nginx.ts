import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { get } from 'node:https';
import { join } from 'node:path';
import { ManagedChild, httpOk, waitFor } from './child';
import { renderEdgeLimits, type EdgeLimits } from './edge-limits';
import { renderEdgeTls, type EdgeTls } from './edge-tls';

export interface NginxOptions {
  /** Folder for the rendered config, pid, logs and temp files. */
  prefix: string;
  /** Path of infra/nginx/nginx.conf.template. */
  template: string;
  listenHost: string;
  listenPort: number;
  /** host:port of each gateway. */
  upstreams: string[];
  /** Per-client-IP limits answered by nginx itself; default off. */
  edge?: EdgeLimits;
  /** HTTPS instead of HTTP (with HTTP/2 unless turned off); `ca` is what the readiness check trusts. */
  tls?: EdgeTls & { ca: string };
  /** Also log the refusals a gateway answered in the access log (default: counted by the gateways, not logged). */
  logRefusals?: boolean;
  /** Folder of the demo page's static files (infra/web). */
  webRoot: string;
  /** Health URL path to wait for through nginx. Default /health/live. */
  readyPath?: string;
  echo?: boolean;
}

export function renderNginxConfig(template: string, vars: Record<string, string>): string {
  return template.replace(/\$\{([A-Z_]+)\}/g, (whole, name: string) => {
    const v = vars[name];
    if (v === undefined) throw new Error(`nginx template: no value for ${whole}`);
    return v;
  });
}

export interface NginxHandle {
  url: string;
  child: ManagedChild;
  configFile: string;
  stop(): Promise<void>;
}

/** nginx in the foreground (daemon off) with its own prefix, pid and temp paths. */
export async function startNginx(opts: NginxOptions): Promise<NginxHandle> {
  for (const d of ['tmp/client_body', 'tmp/proxy', 'tmp/fastcgi', 'tmp/uwsgi', 'tmp/scgi']) {
    mkdirSync(join(opts.prefix, d), { recursive: true });
  }
  const listen = opts.listenHost.includes(':') ? `[${opts.listenHost}]:${opts.listenPort}` : `${opts.listenHost}:${opts.listenPort}`;
  const conf = renderNginxConfig(readFileSync(opts.template, 'utf8'), {
    PREFIX: opts.prefix,
    LISTEN: listen,
    UPSTREAM_SERVERS: opts.upstreams.map((u) => `    server ${u} max_fails=1 fail_timeout=2s;`).join('\n'),
    WORKER_CONNECTIONS: '16384',
    ACCESS_LOG_REFUSALS: opts.logRefusals ? '1' : '0',
    WEB_ROOT: opts.webRoot,
    ...renderEdgeLimits(opts.edge),
    ...renderEdgeTls(opts.tls),
  });
  const configFile = join(opts.prefix, 'nginx.conf');
  writeFileSync(configFile, conf);
  const child = new ManagedChild({
    name: 'nginx',
    command: 'nginx',
    args: ['-p', opts.prefix, '-c', configFile, '-e', join(opts.prefix, 'error.log')],
    logFile: join(opts.prefix, 'nginx.stdout.log'),
    echo: opts.echo,
  });
  const url = `${opts.tls ? 'https' : 'http'}://${listen}`;
  const ready = `${url}${opts.readyPath ?? '/health/live'}`;
  const tls = opts.tls;
  await waitFor('nginx', () => (tls ? httpsOk(ready, tls.ca) : httpOk(ready)), 15_000, child);
  return { url, child, configFile, stop: () => child.stop() };
}

/** True when GET url answers with a 2xx over HTTPS, verifying the server against `ca`. */
function httpsOk(url: string, ca: string): Promise<boolean> {
  return new Promise((resolve, reject) => {
    const req = get(url, { ca, timeout: 1_000, agent: false }, (res) => {
      res.resume();
      res.on('end', () => resolve((res.statusCode ?? 0) >= 200 && (res.statusCode ?? 0) < 300));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
  });
}
