import { mkdtempSync, rmSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { Stack } from '@traffic-dam/stack';
import type { Scale } from '../scenario-scale';
import { Runner, type RunResult, type Transport } from '../runner/runner';
import { formatSummary } from '../runner/summary';
import { loadScenarioFile, scaledScenarioFile } from '../scenarios';
import { DamPoller } from './dam-poller';

export interface Configuration {
  /** `before-1gw`, `after-2gw`, ... */
  id: string;
  label: string;
  damMode: 'off' | 'enforce';
  gateways: number;
  /** How the users talk to the gateways; default sse. */
  transport?: Transport;
  /** Waiting clients: each offers to wait this many seconds (a slot, an answer) instead of being refused. */
  waitSec?: number;
}

/** The wait a waiting client offers: the gateways' longest wait offered (DAM_QUEUE_MAX_WAIT_MS, 60 s by default). */
export const WAIT_SEC = 60;

export const CONFIGURATIONS: readonly Configuration[] = [
  { id: 'before-1gw', label: 'before (dam off), 1 gateway', damMode: 'off', gateways: 1 },
  { id: 'after-1gw', label: 'after (dam on), 1 gateway', damMode: 'enforce', gateways: 1 },
  { id: 'before-2gw', label: 'before (dam off), 2 gateways', damMode: 'off', gateways: 2 },
  { id: 'after-2gw', label: 'after (dam on), 2 gateways', damMode: 'enforce', gateways: 2 },
];

/** Run only when asked for (--configs): the same scenarios over Socket.IO instead of SSE, or with waiting clients. */
export const OPTIONAL_CONFIGURATIONS: readonly Configuration[] = [
  { id: 'after-2gw-socketio', label: 'after (dam on), 2 gateways, Socket.IO', damMode: 'enforce', gateways: 2, transport: 'socketio' },
  { id: 'after-1gw-wait', label: `after (dam on), 1 gateway, waiting clients (wait=${WAIT_SEC})`, damMode: 'enforce', gateways: 1, waitSec: WAIT_SEC },
  { id: 'after-2gw-wait', label: `after (dam on), 2 gateways, waiting clients (wait=${WAIT_SEC})`, damMode: 'enforce', gateways: 2, waitSec: WAIT_SEC },
];

/** The loaded scenarios, in the order they run after the unloaded baseline. */
export const SCENARIOS = ['s0', 's1', 's2'] as const;

export interface ExperimentOptions {
  quick: boolean;
  /** Only these configuration ids / scenarios (default all). */
  configs?: string[];
  scenarios?: string[];
  progress?: boolean;
  log?: (line: string) => void;
  /** Ends the experiment early (Ctrl-C, SIGTERM): the current run stops, the stack is stopped. */
  stop?: AbortSignal;
  /** Overrides of the gateways' and worker's environment (recorded in the settings). */
  env?: Record<string, string>;
  /** Keep each stack's folder (gateway, worker and nginx logs) instead of removing it; default false. */
  keepLogs?: boolean;
  /** HTTPS (and HTTP/2) at the edge, as the seed ran it; the runner trusts the stack's local CA. Default false. */
  tls?: boolean;
}

export interface Settings {
  scale: Scale;
  /** The baseline runs at least this long whatever the scale. */
  baselineScale: Scale;
  aiCapacityPerSec: number;
  slotsPerInstance: number;
  /** Environment of every gateway and worker in every configuration. */
  env: Record<string, string>;
}

export interface ConfigurationResult {
  config: Configuration;
  /** baseline, s0, s1, s2. */
  runs: Record<string, RunResult>;
  /** Sessions the gateways still held after each run had ended and settled (should be 0; -1 unknown). */
  heldAfter: Record<string, number>;
  /** Runs after which the stack was replaced because sessions were still held. */
  restartedAfter?: string[];
  error?: string;
}

export interface ExperimentResult {
  startedAt: string;
  finishedAt: string;
  quick: boolean;
  machine: { cpus: number; cpuModel: string; node: string; platform: string; loadavgAtStart: number[]; loadavgAtEnd: number[] };
  settings: Settings;
  /** Whether the clients went through HTTPS at the edge. */
  tls?: boolean;
  seed: Record<string, { title: string; before: string }>;
  results: ConfigurationResult[];
}

/** The JWT secret of the experiment's gateways; the runner signs one JWT per user with it. */
const JWT_SECRET = 'traffic-dam-experiment-secret-0123456789abcdef';

/**
 * What the gateways and the worker do by default where the experiment sets nothing: the
 * acceptance reads them (the gate's promise, the per-user session cap). Kept beside the
 * gateway's config (apps/gateway/src/common/config/config.ts), which defines them.
 */
export const PRODUCT_DEFAULTS = { DAM_MAX_QUEUE_WAIT_MS: 2_000, DAM_USER_MAX_SESSIONS: 5 } as const;

export function experimentSettings(quick: boolean): Settings {
  // Quick: every duration x0.07 and a quarter of the users against a quarter of the slots, so
  // the story (1,100 users against 1,000 slots per instance) keeps its proportions.
  const scale: Scale = quick ? { time: 0.07, vus: 0.25 } : { time: 1, vus: 1 };
  const slotsPerInstance = Math.round(1_000 * scale.vus);
  const aiCapacityPerSec = 100;
  return {
    scale,
    baselineScale: { time: Math.max(scale.time, 0.25), vus: 1 },
    aiCapacityPerSec,
    slotsPerInstance,
    // Only what defines the scenarios; every gate, deadline and timeout is the product's default.
    env: {
      // Each virtual user is a verified identity (one JWT each), as production users are.
      AUTH_JWT_SECRET: JWT_SECRET,
      DAM_SLOTS_PER_INSTANCE: String(slotsPerInstance),
      // S2's normal user asks back to back (an answer takes ~0.6 s), about 100 questions a minute:
      // a scripted client, faster than the default's one a second (60 per minute) for a person.
      // At 120 a minute it runs unhindered while each abuser (20 a second) is held by it.
      DAM_USER_QUESTIONS: '120',
      // The seed's simulated LLM (the worker's defaults): 100 answers/s across workers, 200 ms to
      // the first token, 20 tokens at 50/s.
      AI_CAPACITY_PER_SEC: String(aiCapacityPerSec),
      AI_TTFT_MS: '200',
      AI_TOKENS_PER_SEC: '50',
      AI_ANSWER_TOKENS: '20',
    },
  };
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/**
 * After a run: wait (bounded) until the gateways hold no session, and report what is left
 * (-1: a gateway did not answer /dam, so it is unknown).
 */
async function settle(poller: DamPoller, maxMs: number): Promise<number> {
  const until = Date.now() + maxMs;
  let held = await poller.held();
  while (held !== 0 && Date.now() < until) {
    await sleep(500);
    held = await poller.held();
  }
  return held ?? -1;
}

export async function runExperiment(o: ExperimentOptions): Promise<ExperimentResult> {
  const log = o.log ?? ((l: string) => process.stdout.write(`${l}\n`));
  const settings = experimentSettings(o.quick);
  Object.assign(settings.env, o.env);
  const capacity = Number(settings.env['AI_CAPACITY_PER_SEC']);
  if (Number.isFinite(capacity) && capacity > 0) settings.aiCapacityPerSec = capacity;
  const slots = Number(settings.env['DAM_SLOTS_PER_INSTANCE']);
  if (Number.isFinite(slots) && slots > 0) settings.slotsPerInstance = slots;
  const configs = o.configs ? [...CONFIGURATIONS, ...OPTIONAL_CONFIGURATIONS].filter((c) => o.configs?.includes(c.id)) : [...CONFIGURATIONS];
  const scenarios = SCENARIOS.filter((s) => !o.scenarios || o.scenarios.includes(s));
  const seed: ExperimentResult['seed'] = {};
  for (const s of scenarios) {
    const f = loadScenarioFile(s);
    seed[s] = { title: f.title, before: f.seedBefore };
  }
  const startedAt = new Date().toISOString();
  const loadAtStart = loadavg();
  const results: ConfigurationResult[] = [];
  for (const config of configs) {
    if (o.stop?.aborted) break;
    const result: ConfigurationResult = { config, runs: {}, heldAfter: {}, restartedAfter: [] };
    results.push(result);
    let running: { stack: Stack; dir: string; poller: DamPoller } | null = null;
    const start = async (): Promise<{ stack: Stack; dir: string; poller: DamPoller }> => {
      const dir = mkdtempSync(join(tmpdir(), `td-experiment-${config.id}-`));
      // Refusals in the access log too: npm run access-log reads them per second.
      const stack = new Stack({ dir, gateways: config.gateways, workers: 1, port: 0, tls: o.tls, logRefusals: true, env: { ...settings.env, DAM_MODE: config.damMode } });
      running = { stack, dir, poller: new DamPoller([]) };
      await stack.start();
      running.poller = new DamPoller(stack.gateways.map((g) => g.url));
      running.poller.start();
      return running;
    };
    const stop = async (keepLogs: boolean): Promise<void> => {
      const r = running as { stack: Stack; dir: string; poller: DamPoller } | null;
      running = null;
      if (!r) return;
      r.poller.stop();
      await r.stack.stop();
      if (keepLogs || o.keepLogs) log(`   logs kept in ${r.dir}`);
      else rmSync(r.dir, { recursive: true, force: true });
    };
    log(`== ${config.label}: starting the stack`);
    try {
      let cur = await start();
      const names = ['baseline', ...scenarios];
      for (const [i, name] of names.entries()) {
        if (o.stop?.aborted) break;
        const scale = name === 'baseline' ? settings.baselineScale : settings.scale;
        const file = scaledScenarioFile(loadScenarioFile(name), scale);
        log(`-- ${config.id} ${name}: ${file.title}`);
        const poller = cur.poller;
        const run = await new Runner({
          baseUrl: cur.stack.url,
          transport: config.transport,
          waitSec: config.waitSec,
          tls: { ca: cur.stack.certificate?.ca },
          file,
          jwtSecret: JWT_SECRET,
          progress: o.progress,
          sample: () => poller.sample(),
          stop: o.stop,
        }).run();
        result.runs[name] = run;
        log(formatSummary(run));
        // Sessions are released as clients close; give the gateways a moment before the next run.
        result.heldAfter[name] = await settle(poller, o.quick ? 3_000 : 15_000);
        if (result.heldAfter[name] && i < names.length - 1 && !o.stop?.aborted) {
          // Slots that outlive their clients would fill the next scenario's budget: it gets a
          // fresh stack instead, and the report shows the leak.
          log(`   ${result.heldAfter[name] < 0 ? 'unknown (no /dam answer)' : result.heldAfter[name]} sessions still held after ${name} settled: a fresh stack for the next scenario`);
          result.restartedAfter?.push(name);
          await stop(false);
          cur = await start();
        } else if (result.heldAfter[name]) {
          log(`   ${result.heldAfter[name]} sessions still held after ${name} settled`);
        }
        await sleep(o.quick ? 500 : 3_000);
      }
      await stop(false);
    } catch (err) {
      result.error = err instanceof Error ? err.message : String(err);
      log(`   ${config.id} failed: ${result.error}`);
      await stop(true);
    }
  }
  const cpu = cpus();
  return {
    startedAt,
    finishedAt: new Date().toISOString(),
    quick: o.quick,
    machine: {
      cpus: cpu.length,
      cpuModel: cpu[0]?.model ?? 'unknown',
      node: process.version,
      platform: `${process.platform} ${process.arch}`,
      loadavgAtStart: loadAtStart.map((l) => Math.round(l * 100) / 100),
      loadavgAtEnd: loadavg().map((l) => Math.round(l * 100) / 100),
    },
    settings,
    tls: o.tls ?? false,
    seed,
    results,
  };
}
