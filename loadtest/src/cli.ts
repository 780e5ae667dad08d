// npm run loadtest -- <scenario> [--base-url http://127.0.0.1:8080] [--transport sse|socketio] [--scale 1] [--vus-scale 1] [--wait S] [--out file.json]
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { Runner } from './runner/runner';
import { formatSummary } from './runner/summary';
import { loadScenarioFile, scaledScenarioFile } from './scenarios';

const HELP = `npm run loadtest -- <scenario> [options]

  <scenario>         s0 | s1 | s2 | baseline (loadtest/scenarios/<name>.json) or a path to such a file
  --base-url URL     the load balancer (default http://127.0.0.1:8080, what "npm start" prints); loopback only;
                     https:// for "npm start -- --tls", with --ca or --insecure
  --ca FILE          trust this CA for https:// (npm start -- --tls: .stack/tls/ca.crt)
  --insecure         https:// without verifying the certificate (loopback targets only)
  --transport T      sse (GET /chat/stream + POST, the default) or socketio (namespace /chat: connect, ask, answer)
  --scale F          time scale: every duration times F (default 1; 0.1 runs S1 in 30 s)
  --vus-scale F      closed-model VU counts times F (default 1)
  --jwt-secret S     give each VU its own HS256 JWT (the gateway's AUTH_JWT_SECRET) so per-user limits apply
                     (default: env LOADTEST_JWT_SECRET; without it users are anonymous)
  --retry-after-max-ms N   longest Retry-After a refused VU honours (default 60000)
  --wait S           waiting clients: each offers to wait S seconds in line (GET /chat/stream?wait=S, and
                     Prefer: wait=S on its question) instead of being refused; SSE only. The summary and
                     the JSON give every wait and the ETA it was told
  --out FILE         write the JSON results there (default loadtest/results/<scenario>-<time>.json)
  --no-progress      no progress bar
`;

function num(name: string, raw: string | undefined, def: number, min: number, max: number): number {
  if (raw === undefined) return def;
  const n = Number(raw);
  if (!Number.isFinite(n) || n < min || n > max) {
    process.stderr.write(`${name} must be a number from ${min} to ${max}, got ${JSON.stringify(raw)}\n`);
    process.exit(2);
  }
  return n;
}

async function main(): Promise<void> {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      'base-url': { type: 'string', default: 'http://127.0.0.1:8080' },
      ca: { type: 'string' },
      insecure: { type: 'boolean', default: false },
      transport: { type: 'string', default: 'sse' },
      scale: { type: 'string' },
      'vus-scale': { type: 'string' },
      'jwt-secret': { type: 'string' },
      'retry-after-max-ms': { type: 'string' },
      wait: { type: 'string' },
      out: { type: 'string' },
      'no-progress': { type: 'boolean', default: false },
      help: { type: 'boolean', default: false },
    },
  });
  if (values.help || positionals.length !== 1) {
    process.stdout.write(HELP);
    process.exit(values.help ? 0 : 2);
  }
  const name = positionals[0] as string;
  const transport = values.transport;
  if (transport !== 'sse' && transport !== 'socketio') {
    process.stderr.write(`--transport must be sse or socketio, got ${JSON.stringify(transport)}\n`);
    process.exit(2);
  }
  const scale = { time: num('--scale', values.scale, 1, 0.001, 100), vus: num('--vus-scale', values['vus-scale'], 1, 0.001, 100) };
  const file = scaledScenarioFile(loadScenarioFile(name), scale);
  const stop = new AbortController();
  const runner = new Runner({
    stop: stop.signal,
    baseUrl: values['base-url'] as string,
    tls: { ca: values.ca ? readFileSync(values.ca, 'utf8') : undefined, insecure: values.insecure },
    transport,
    file,
    jwtSecret: values['jwt-secret'] ?? process.env['LOADTEST_JWT_SECRET'],
    retryAfterMaxMs: num('--retry-after-max-ms', values['retry-after-max-ms'], 60_000, 0, 600_000),
    waitSec: values.wait === undefined ? undefined : num('--wait', values.wait, 0, 1, 3_600),
    progress: !values['no-progress'],
  });
  let interrupted = false;
  process.once('SIGINT', () => {
    interrupted = true;
    stop.abort();
    process.stderr.write('\nSIGINT: stopping (a second Ctrl-C quits at once)\n');
    process.once('SIGINT', () => process.exit(130));
  });
  const result = await runner.run();
  process.stdout.write(formatSummary(result));
  const out = resolve(values.out ?? `loadtest/results/${file.name}${transport === 'sse' ? '' : `-${transport}`}-${result.startedAt.replace(/[:.]/g, '-')}.json`);
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(out, JSON.stringify({ ...result, scale }, null, 1));
  process.stdout.write(`  results: ${out}\n`);
  if (interrupted) process.exit(130);
}

main().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
