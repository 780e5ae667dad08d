// npm run timings [-- --samples 500 --out file.json]
import { writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { parseArgs } from 'node:util';
import { runTimings } from './timings';

const HELP = `npm run timings [-- --samples N] [--out FILE]

Starts its own stack on free 127.0.0.1 ports (nginx, 2 gateways, Redis, 1 worker) and times what the
tests only check happens: refusals (dam_full through nginx, ai_unavailable with the breaker open),
admissions while Redis is stopped, the deadline of a lost answer, a killed gateway leaving the
budget. Prints one JSON line per figure with its target, and a table. Run it on a quiet machine
(not beside the test suite); the figures go to BENCHMARKS.md.

  --samples N   samples per latency figure (default 500)
  --out FILE    also write the results as JSON
`;

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { samples: { type: 'string', default: '500' }, out: { type: 'string' }, help: { type: 'boolean', default: false } } });
  if (values.help) {
    process.stdout.write(HELP);
    return;
  }
  const samples = Number(values.samples);
  if (!Number.isInteger(samples) || samples < 20) {
    process.stderr.write('--samples must be an integer of at least 20\n');
    process.exit(2);
  }
  const startedAt = new Date().toISOString();
  const results = await runTimings({ samples });
  const machine = { cpus: cpus().length, model: cpus()[0]?.model ?? '?', loadavg: loadavg().map((l) => Number(l.toFixed(2))) };
  process.stdout.write(`\ntimings (${startedAt}, ${machine.cpus} x ${machine.model}, load ${machine.loadavg.join(' ')})\n`);
  process.stdout.write('| what | p50 ms | p99 ms | max ms | n | target (p99) | met |\n|---|---|---|---|---|---|---|\n');
  for (const r of results) {
    process.stdout.write(`| ${r.name} | ${r.p50.toFixed(1)} | ${r.p99.toFixed(1)} | ${r.max.toFixed(1)} | ${r.n} | <= ${r.targetMs} | ${r.met ? 'yes' : 'NO'} |\n`);
  }
  if (values.out) writeFileSync(values.out, JSON.stringify({ startedAt, machine, results }, null, 2));
}

main().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
