// npm run experiment [-- --quick] [--out dir] [--configs before-1gw,after-1gw] [--scenarios s0,s1,s2] [--keep-logs]
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { CONFIGURATIONS, OPTIONAL_CONFIGURATIONS, SCENARIOS, runExperiment, type ExperimentResult } from './experiment';
import { acceptance } from './figures';
import { renderMarkdown } from './markdown';
import { renderReport } from './report';

const HELP = `npm run experiment [-- options]

Starts a fresh stack for each configuration (dam off "before" / dam on "after", 1 and 2 gateways),
runs the unloaded baseline and the scenarios S0, S1, S2 against it, stops it, and writes one
self-contained HTML report (charts, the seed's table before beside after, acceptance) and the JSON.

  --quick            durations x0.07 and a quarter of the users and slots (about 4 minutes)
  --out DIR          where to write report.html and results.json (default loadtest/reports/<time>)
  --configs LIST     only these of: ${CONFIGURATIONS.map((c) => c.id).join(', ')} (the default: all four),
                     or ${OPTIONAL_CONFIGURATIONS.map((c) => c.id).join(', ')} (the same over Socket.IO, or with waiting clients: wait=60)
  --scenarios LIST   only these of: ${SCENARIOS.join(', ')} (the baseline always runs)
  --env KEY=VALUE    override a gateway/worker setting (repeatable), e.g. --env DAM_SLOTS_PER_INSTANCE=200
  --no-progress      no progress bars
  --keep-logs        keep each stack's folder: gateway, worker and nginx logs (the access log gives
                     each request's time to the gateway's response headers)
  --tls              HTTPS and HTTP/2 at the edge (a local CA in each stack's folder), as the seed ran it
  --render FILE      only write report.html and summary.md again from a results.json (into --out, default its folder)
`;

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      quick: { type: 'boolean', default: false },
      out: { type: 'string' },
      configs: { type: 'string' },
      scenarios: { type: 'string' },
      'no-progress': { type: 'boolean', default: false },
      'keep-logs': { type: 'boolean', default: false },
      tls: { type: 'boolean', default: false },
      render: { type: 'string' },
      env: { type: 'string', multiple: true },
      help: { type: 'boolean', default: false },
    },
  });
  if (values.help) {
    process.stdout.write(HELP);
    return;
  }
  if (values.render) {
    const from = resolve(values.render);
    const dir = values.out ? resolve(values.out) : dirname(from);
    mkdirSync(dir, { recursive: true });
    const saved = JSON.parse(readFileSync(from, 'utf8')) as ExperimentResult;
    writeFileSync(join(dir, 'report.html'), renderReport(saved));
    writeFileSync(join(dir, 'summary.md'), renderMarkdown(saved));
    process.stdout.write(`report: ${join(dir, 'report.html')}\n`);
    return;
  }
  const list = (v: string | undefined, known: readonly string[], name: string): string[] | undefined => {
    if (v === undefined) return undefined;
    const items = v.split(',').map((s) => s.trim()).filter(Boolean);
    const bad = items.filter((i) => !known.includes(i));
    if (bad.length || items.length === 0) {
      process.stderr.write(`${name}: unknown ${bad.join(', ') || '(empty)'}; known: ${known.join(', ')}\n`);
      process.exit(2);
    }
    return items;
  };
  const configs = list(values.configs, [...CONFIGURATIONS, ...OPTIONAL_CONFIGURATIONS].map((c) => c.id), '--configs');
  const scenarios = list(values.scenarios, SCENARIOS, '--scenarios');
  const env: Record<string, string> = {};
  for (const kv of values.env ?? []) {
    const m = /^([A-Z][A-Z0-9_]*)=(.*)$/.exec(kv);
    if (!m) {
      process.stderr.write(`--env wants KEY=VALUE, got ${JSON.stringify(kv)}\n`);
      process.exit(2);
    }
    env[m[1] as string] = m[2] as string;
  }
  const started = Date.now();
  const out = resolve(values.out ?? join('loadtest/reports', new Date().toISOString().replace(/[:.]/g, '-')));
  mkdirSync(out, { recursive: true });
  // First signal: stop the current run, stop the stack, write what was measured. Second: exit now
  // (the stack's children are killed on exit).
  const stop = new AbortController();
  const onSignal = (sig: string): void => {
    if (stop.signal.aborted) process.exit(130);
    process.stderr.write(`\n${sig}: stopping the experiment (again to quit at once)\n`);
    stop.abort();
  };
  process.on('SIGINT', () => onSignal('SIGINT'));
  process.on('SIGTERM', () => onSignal('SIGTERM'));
  const result = await runExperiment({ quick: values.quick, configs, scenarios, progress: !values['no-progress'], stop: stop.signal, env, keepLogs: values['keep-logs'], tls: values.tls });
  writeFileSync(join(out, 'results.json'), JSON.stringify(result, null, 1));
  writeFileSync(join(out, 'report.html'), renderReport(result));
  writeFileSync(join(out, 'summary.md'), renderMarkdown(result));
  const checks = acceptance(result);
  process.stdout.write('\nAcceptance (dam on):\n');
  for (const c of checks) process.stdout.write(`  [${c.pass ? 'met' : 'NOT met'}] ${c.config}: ${c.what}: ${c.value}\n`);
  process.stdout.write(`\nreport: ${join(out, 'report.html')}\nresults: ${join(out, 'results.json')}\ntook ${Math.round((Date.now() - started) / 1000)} s\n`);
  if (stop.signal.aborted) process.exit(130);
  if (result.results.some((r) => r.error)) process.exit(1);
}

main().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
