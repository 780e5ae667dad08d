// npm run access-log -- <nginx access.log> [--from TIME] [--seconds N]
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { bySecond, parseAccessLine, type AccessEntry } from './access-log';

const HELP = `npm run access-log -- <access.log> [--from TIME] [--seconds N]

Per second of arrival (from --from, else from the first stream open or question): stream opens and
questions, their statuses, and p50/p99/max of the gateway's time to response headers (nginx's
$upstream_header_time). Shows whether slow answers waited at the edge or in the gateway.
The log is nginx's access.log of a stack (npm run experiment -- --keep-logs keeps it).

  --from TIME   start here and leave out what came before: an ISO time (a run's startedAt in
                the experiment's results.json) or epoch ms
  --seconds N   only the first N seconds (default 20)
`;

const ms = (v: number | null): string => (v === null ? '-' : String(Math.round(v)));

function main(): void {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: { from: { type: 'string' }, seconds: { type: 'string', default: '20' }, help: { type: 'boolean', default: false } },
  });
  const file = positionals[0];
  if (values.help || file === undefined) {
    process.stdout.write(HELP);
    process.exit(file === undefined && !values.help ? 2 : 0);
  }
  const seconds = Number(values.seconds);
  if (!Number.isInteger(seconds) || seconds < 1) {
    process.stderr.write(`--seconds wants a whole number >= 1, got ${JSON.stringify(values.seconds)}\n`);
    process.exit(2);
  }
  const from = values.from === undefined ? undefined : /^\d+$/.test(values.from) ? Number(values.from) : Date.parse(values.from);
  if (from !== undefined && !Number.isFinite(from)) {
    process.stderr.write(`--from wants an ISO time or epoch ms, got ${JSON.stringify(values.from)}\n`);
    process.exit(2);
  }
  const entries = readFileSync(file, 'utf8')
    .split('\n')
    .map(parseAccessLine)
    .filter((e): e is AccessEntry => e !== null);
  process.stdout.write('second  kind      count  statuses                         headers ms p50 / p99 / max\n');
  for (const r of bySecond(entries, from).filter((row) => row.second < seconds)) {
    const st = Object.entries(r.statuses)
      .map(([k, v]) => `${k}:${v}`)
      .join(' ');
    process.stdout.write(
      `${String(r.second).padStart(6)}  ${r.kind.padEnd(8)}  ${String(r.count).padStart(5)}  ${st.padEnd(31)}  ${ms(r.headersP50)} / ${ms(r.headersP99)} / ${ms(r.headersMax)}\n`,
    );
  }
}

main();
