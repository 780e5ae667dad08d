// `npm start` runs this after set-up: the whole stack in the foreground until Ctrl-C/SIGTERM.
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Stack, repoRoot } from './index';

function intOf(name: string, raw: string | undefined, def: number, min: number, max: number): number {
  if (raw === undefined || raw === '') return def;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min || n > max) {
    process.stderr.write(`${name} must be an integer from ${min} to ${max}, got ${JSON.stringify(raw)}\n`);
    process.exit(2);
  }
  return n;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      port: { type: 'string' },
      gateways: { type: 'string' },
      workers: { type: 'string' },
      'redis-port': { type: 'string' },
      tls: { type: 'boolean', default: false },
      quiet: { type: 'boolean', default: false },
      help: { type: 'boolean', default: false },
    },
  });
  if (values.help) {
    process.stdout.write(
      'npm start -- [--port 8080] [--gateways 2] [--workers 1] [--redis-port 0] [--tls] [--quiet]\n' +
        '--tls: HTTPS and HTTP/2 at the edge, with a certificate signed by a local CA made on first use in .stack/tls/\n' +
        'Env: STACK_PORT, STACK_GATEWAYS, STACK_WORKERS, STACK_REDIS_PORT, STACK_TLS=1; EDGE_STREAMS_PER_IP, EDGE_QUESTIONS_PER_IP_PER_SEC\n' +
        '(nginx per-client-IP limits, 0 = off, the default); every other variable is passed to gateways and workers.\n',
    );
    return;
  }
  const env = process.env;
  const stack = new Stack({
    dir: join(repoRoot(), '.stack'),
    port: intOf('--port', values.port ?? env['STACK_PORT'], 8080, 0, 65535),
    gateways: intOf('--gateways', values.gateways ?? env['STACK_GATEWAYS'], 2, 1, 32),
    workers: intOf('--workers', values.workers ?? env['STACK_WORKERS'], 1, 1, 32),
    redisPort: intOf('--redis-port', values['redis-port'] ?? env['STACK_REDIS_PORT'], 0, 0, 65535),
    tls: values.tls || env['STACK_TLS'] === '1',
    edge: {
      streamsPerIp: intOf('EDGE_STREAMS_PER_IP', env['EDGE_STREAMS_PER_IP'], 0, 0, 1_000_000),
      questionsPerIpPerSec: intOf('EDGE_QUESTIONS_PER_IP_PER_SEC', env['EDGE_QUESTIONS_PER_IP_PER_SEC'], 0, 0, 1_000_000),
    },
    echo: !values.quiet,
  });
  let stopping = false;
  const stop = async (sig: string): Promise<void> => {
    if (stopping) return;
    stopping = true;
    process.stdout.write(`\n${sig}: stopping nginx, gateways, workers and Redis...\n`);
    await stack.stop();
    process.stdout.write('stopped; nothing left running.\n');
    process.exit(0);
  };
  process.on('SIGINT', () => void stop('SIGINT'));
  process.on('SIGTERM', () => void stop('SIGTERM'));
  process.on('SIGHUP', () => void stop('SIGHUP'));
  // npm does not always pass its SIGTERM down the chain; a parent that is gone means stop.
  const parent = process.ppid;
  setInterval(() => {
    if (process.ppid !== parent) void stop('parent exited');
  }, 250);
  await stack.start();
  const url = stack.url;
  const ca = stack.certificate?.caFile;
  process.stdout.write(
    [
      '',
      `Traffic Dam is up${ca ? ' (HTTPS and HTTP/2 at the edge)' : ''}.`,
      `  chat (SSE)   ${url}/chat/stream`,
      `  ask          POST ${url}/chat/sessions/{sessionId}/messages  (Authorization: Bearer <token>)`,
      `  health       ${url}/health/ready`,
      `  metrics      ${url}/metrics  (loopback only)`,
      ...stack.gateways.map((g) => `  gateway ${g.index}    ${g.url}  (pid ${g.child.pid})`),
      ...stack.workers.map((w) => `  worker ${w.index}     ${w.url}/health  (pid ${w.child.pid})`),
      `  redis        ${stack.redisUrl}`,
      `  logs         ${stack.opts.dir}/`,
      ...(ca ? [`  local CA     ${ca}  (trust it: curl --cacert, NODE_EXTRA_CA_CERTS)`] : []),
      `Try:  curl -N ${ca ? `--cacert ${ca} ` : ''}${url}/chat/stream`,
      'Ctrl-C stops everything.',
      '',
    ].join('\n') + '\n',
  );
  // If a child dies on its own, say so; the rest keeps serving.
  for (const c of stack.workers.map((w) => w.child)) {
    void c.wait().then((code) => {
      if (!stopping) process.stderr.write(`${c.opts.name} exited (${code}); see ${c.opts.logFile}\n`);
    });
  }
  // A gateway that exits 0 was drained (SIGTERM to its pid): it comes back on the same port, so
  // `kill -TERM <pid>` one gateway at a time is a rolling restart. Any other exit is reported.
  const watch = (index: number): void => {
    const g = stack.gateways[index];
    if (!g) return;
    void g.child.wait().then(async (code) => {
      if (stopping) return;
      if (code !== 0) {
        process.stderr.write(`${g.child.opts.name} exited (${code}); see ${g.child.opts.logFile}\n`);
        return;
      }
      process.stdout.write(`gateway ${index} drained and exited 0; starting it again on ${g.url}\n`);
      try {
        const fresh = await stack.startGateway(index, g.port);
        stack.gateways[index] = fresh;
        if (stopping) {
          await fresh.child.stop(); // the stack stopped while it started
          return;
        }
        process.stdout.write(`gateway ${index} is back: ${fresh.url} (pid ${fresh.child.pid})\n`);
        watch(index);
      } catch (err) {
        process.stderr.write(`gateway ${index} did not come back: ${err instanceof Error ? err.message : String(err)}\n`);
      }
    });
  };
  stack.gateways.forEach((_, i) => watch(i));
}

main().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
