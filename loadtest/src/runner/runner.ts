import { setMaxListeners } from 'node:events';
import { SingleBar } from 'cli-progress';
import { Pool } from 'undici';
import {
  parseDuration,
  rampTarget,
  scenarioDurationMs,
  scenarioMaxVus,
  type ConstantArrivalRate,
  type ConstantVus,
  type RampingVus,
  type Scenario,
  type ScenarioFile,
} from '../scenario-scale';
import { ChatClient, DEFAULT_DEADLINES, type Deadlines, type IterationResult, type LifecycleClient } from './chat-client';
import { Metrics, type RoleSummary, type Second, type Waits } from './metrics';
import { SelfMonitor, type SelfReport } from './self-monitor';
import { SocketChatClient } from './socket-chat-client';

/** How the virtual users talk to the gateway: SSE + HTTP, or Socket.IO (namespace /chat). */
export type Transport = 'sse' | 'socketio';

export interface RunnerOptions {
  /** The load balancer, e.g. http://127.0.0.1:8080 or https://127.0.0.1:8443. Only loopback addresses are accepted. */
  baseUrl: string;
  /** For an https:// base URL: the CA to trust (PEM), or `insecure` to skip verification (loopback only). */
  tls?: RunnerTls;
  /** Scenarios as they will run (already scaled). */
  file: ScenarioFile;
  /** Default sse. */
  transport?: Transport;
  jwtSecret?: string;
  deadlines?: Partial<Deadlines>;
  /** Longest wait a refused VU honours from Retry-After. */
  retryAfterMaxMs?: number;
  /** Waiting clients: each offers to wait this many seconds for a slot and for its answer (SSE only). */
  waitSec?: number;
  question?: string;
  progress?: boolean;
  /** Called every second; its figures are stored with that second (e.g. the dam's used/capacity). */
  sample?: () => Record<string, number>;
  /** Ends the run early (Ctrl-C): VUs finish their iteration within the graceful stop. */
  stop?: AbortSignal;
}

export interface RunResult {
  scenario: string;
  title: string;
  baseUrl: string;
  /** Absent in results written before Socket.IO (they are SSE). */
  transport?: Transport;
  startedAt: string;
  durationMs: number;
  scenarios: Record<string, Scenario>;
  deadlines: Deadlines;
  /** Per role: `user` (S0/S1), `normal` and `abuser` (S2). */
  roles: Record<string, RoleSummary>;
  seconds: Second[];
  droppedIterations: number;
  peakVus: number;
  /** Completed answers over the whole run / its length in seconds. */
  completedPerSec: number;
  /** Waiting clients only: the wait they offered, and every wait they had with the estimate they were told. */
  waitSec?: number;
  waits?: Waits;
  runner: SelfReport & { cpuPercentPerSecond: number[]; lagMaxMsPerSecond: number[] };
}

export interface RunnerTls {
  /** PEM of the CA that signed the edge's certificate (npm start -- --tls: .stack/tls/ca.crt). */
  ca?: string;
  /** Do not verify the certificate at all. Accepted only because every target is loopback. */
  insecure?: boolean;
}

const LOOPBACK = new Set(['127.0.0.1', '::1', '[::1]', 'localhost']);

export function assertLoopback(baseUrl: string): URL {
  const u = new URL(baseUrl);
  if (!LOOPBACK.has(u.hostname)) throw new Error(`load tests only target 127.0.0.1 or ::1, not ${u.hostname}`);
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new Error(`only http:// and https:// are supported, not ${u.protocol}`);
  return u;
}

/** undici's connect options for the base URL: the CA to trust, or no verification when asked. */
function connectOptions(u: URL, tls: RunnerTls | undefined): { timeout: number; ca?: string; rejectUnauthorized?: boolean } {
  if (u.protocol !== 'https:') return { timeout: 10_000 };
  if (tls?.insecure) return { timeout: 10_000, rejectUnauthorized: false };
  return { timeout: 10_000, ...(tls?.ca ? { ca: tls.ca } : {}) };
}

/** Sleeps `ms`, or less when any of the signals aborts. */
function sleep(ms: number, ...signals: AbortSignal[]): Promise<void> {
  if (ms <= 0 || signals.some((s) => s.aborted)) return Promise.resolve();
  return new Promise((resolve) => {
    const done = (): void => {
      clearTimeout(t);
      for (const s of signals) s.removeEventListener('abort', done);
      resolve();
    };
    const t = setTimeout(done, ms);
    for (const s of signals) s.addEventListener('abort', done);
  });
}

/** A closed-model virtual user: runs iterations until retired (finish the current one) or aborted. */
class Vu {
  readonly retire = new AbortController();
  readonly abort = new AbortController();
  loop: Promise<void> = Promise.resolve();
  constructor(readonly id: number) {}
}

/** Runs one scenario file: every scenario in it at once, as k6 would. */
export class Runner {
  private readonly metrics: Metrics;
  private readonly client: LifecycleClient;
  private readonly pool: Pool;
  private readonly deadlines: Deadlines;
  private readonly retryAfterMaxMs: number;
  private readonly startedAt = Date.now();
  private activeVus = 0;
  private peakVus = 0;

  constructor(private readonly o: RunnerOptions) {
    const u = assertLoopback(o.baseUrl);
    const maxVus = Object.values(o.file.scenarios).reduce((n, s) => n + scenarioMaxVus(s), 0);
    // A stream and a POST per VU at once, never queued in the client (that would read as server latency).
    this.pool = new Pool(u.origin, { connections: maxVus * 2 + 64, pipelining: 1, keepAliveTimeout: 10_000, connect: connectOptions(u, o.tls) });
    this.metrics = new Metrics(this.startedAt);
    this.deadlines = { ...DEFAULT_DEADLINES, ...o.deadlines };
    this.retryAfterMaxMs = o.retryAfterMaxMs ?? 60_000;
    const common = {
      metrics: this.metrics,
      deadlines: this.deadlines,
      question: o.question ?? 'How does a dam keep a river from flooding?',
      jwtSecret: o.jwtSecret,
      retryAfterMaxMs: this.retryAfterMaxMs,
    };
    if (o.waitSec !== undefined && o.transport === 'socketio') throw new Error('waiting clients run over SSE only');
    this.client =
      o.transport === 'socketio' ? new SocketChatClient({ ...common, origin: u.origin }) : new ChatClient({ ...common, pool: this.pool, waitSec: o.waitSec });
  }

  private stopSignals(): AbortSignal[] {
    return this.o.stop ? [this.o.stop] : [];
  }

  private vuStarted(): void {
    this.activeVus++;
    this.peakVus = Math.max(this.peakVus, this.activeVus);
  }

  /** The closed-model loop: lifecycle, and after a refusal its Retry-After (bounded). */
  private async runVu(vu: Vu, role: string, user: string): Promise<void> {
    this.vuStarted();
    try {
      while (!vu.retire.signal.aborted && !vu.abort.signal.aborted) {
        const r: IterationResult = await this.client.lifecycle(role, user, vu.abort.signal);
        if (r.outcome === 'refused') {
          await sleep(Math.min(r.retryAfterMs ?? 1_000, this.retryAfterMaxMs), vu.retire.signal, vu.abort.signal);
        } else if (r.outcome === 'error') {
          // No hot loop against a server that is not answering at all.
          await sleep(100, vu.retire.signal, vu.abort.signal);
        }
      }
    } finally {
      this.activeVus--;
    }
  }

  /** Retires VUs (they finish their iteration); aborts those still running after `graceMs`. */
  private async stopVus(vus: Vu[], graceMs: number): Promise<void> {
    for (const v of vus) v.retire.abort();
    const all = Promise.all(vus.map((v) => v.loop));
    const timer = setTimeout(() => {
      for (const v of vus) v.abort.abort();
    }, graceMs);
    await all;
    clearTimeout(timer);
  }

  private role(s: Scenario, name: string): string {
    return s.tags?.['role'] ?? name;
  }

  private async constantVus(name: string, s: ConstantVus): Promise<void> {
    const role = this.role(s, name);
    const vus = Array.from({ length: s.vus }, (_, i) => new Vu(i + 1));
    for (const v of vus) v.loop = this.runVu(v, role, `${this.o.file.name}-${name}-vu${v.id}`);
    await sleep(parseDuration(s.duration), ...this.stopSignals());
    await this.stopVus(vus, parseDuration(s.gracefulStop ?? '30s'));
  }

  private async rampingVus(name: string, s: RampingVus): Promise<void> {
    const role = this.role(s, name);
    const running: Vu[] = [];
    const retiring: Vu[] = [];
    const rampDownMs = parseDuration(s.gracefulRampDown ?? '30s');
    let next = 1;
    const start = performance.now();
    const total = scenarioDurationMs({ ...s, startTime: undefined });
    // Stage ends, so that each stage's target is met exactly (the peak of a ramp included).
    const boundaries: number[] = [];
    s.stages.reduce((t, st) => {
      boundaries.push(t + parseDuration(st.duration));
      return t + parseDuration(st.duration);
    }, 0);
    const apply = (target: number): void => {
      while (running.length < target) {
        const v = new Vu(next++);
        v.loop = this.runVu(v, role, `${this.o.file.name}-${name}-vu${v.id}`);
        running.push(v);
      }
      while (running.length > target) {
        // The newest VUs leave first, as in k6; each finishes its iteration within gracefulRampDown.
        const v = running.pop() as Vu;
        retiring.push(v);
        void this.stopVus([v], rampDownMs);
      }
    };
    let last = -1;
    for (;;) {
      const elapsed = performance.now() - start;
      for (const b of boundaries) if (b > last && b <= elapsed) apply((s.stages[boundaries.indexOf(b)] as { target: number }).target);
      last = elapsed;
      if (elapsed >= total || this.o.stop?.aborted) break;
      apply(rampTarget(s, elapsed));
      const nextBoundary = boundaries.find((b) => b > elapsed) ?? total;
      await sleep(Math.max(1, Math.min(100, nextBoundary - elapsed)));
    }
    await this.stopVus([...running, ...retiring], parseDuration(s.gracefulStop ?? '30s'));
  }

  /**
   * Open model: iterations start on a schedule whatever the answers do. With `env.USERS` the
   * iterations belong to that many users in turn (the abusers); each runs on a free VU, and an
   * iteration with no free VU (maxVUs busy) is dropped, as k6 counts it.
   */
  private async constantArrivalRate(name: string, s: ConstantArrivalRate): Promise<void> {
    const role = this.role(s, name);
    const users = Number(s.env?.['USERS'] ?? 0);
    const perMs = s.rate / parseDuration(s.timeUnit ?? '1s');
    const durationMs = parseDuration(s.duration);
    const maxVus = s.maxVUs ?? s.preAllocatedVUs;
    const abort = new AbortController();
    // Every iteration in flight listens on this one signal; at most maxVUs of them, by design.
    setMaxListeners(maxVus + 1, abort.signal);
    const inFlight = new Set<Promise<void>>();
    let launched = 0;
    let busy = 0;
    const start = performance.now();
    for (;;) {
      const elapsed = performance.now() - start;
      if (elapsed >= durationMs || this.o.stop?.aborted) break;
      const due = Math.floor(elapsed * perMs) + 1;
      while (launched < due) {
        const i = launched++;
        if (busy >= maxVus) {
          this.metrics.droppedIterations++;
          continue;
        }
        busy++;
        this.vuStarted();
        const user = users > 0 ? `${this.o.file.name}-${name}-user${i % users}` : `${this.o.file.name}-${name}-it${i}`;
        const p = this.client
          .lifecycle(role, user, abort.signal, false)
          .then(() => undefined)
          .finally(() => {
            busy--;
            this.activeVus--;
            inFlight.delete(p);
          });
        inFlight.add(p);
      }
      await sleep(Math.max(1, Math.min(10, (launched / perMs) - (performance.now() - start))));
    }
    const timer = setTimeout(() => abort.abort(), parseDuration(s.gracefulStop ?? '30s'));
    await Promise.all([...inFlight]);
    clearTimeout(timer);
  }

  private async runScenario(name: string, s: Scenario): Promise<void> {
    if (s.startTime) await sleep(parseDuration(s.startTime), ...this.stopSignals());
    switch (s.executor) {
      case 'constant-vus':
        return this.constantVus(name, s);
      case 'ramping-vus':
        return this.rampingVus(name, s);
      case 'constant-arrival-rate':
        return this.constantArrivalRate(name, s);
    }
  }

  async run(): Promise<RunResult> {
    const self = new SelfMonitor();
    self.start();
    const cpuPerSecond: number[] = [];
    const lagPerSecond: number[] = [];
    const plannedMs = Math.max(...Object.values(this.o.file.scenarios).map(scenarioDurationMs));
    const bar = this.o.progress
      ? new SingleBar({
          format: `${this.o.file.name} [{bar}] {elapsed}/{planned}s | VUs {vus} | done {completed} ({rate}/s) | refused {refused} | status-0 {status0} | errors {errors} | cpu {cpu}%`,
          hideCursor: true,
          barsize: 24,
          stream: process.stderr,
          noTTYOutput: !process.stderr.isTTY,
          notTTYSchedule: 10_000,
        })
      : null;
    bar?.start(Math.ceil(plannedMs / 1_000), 0, { elapsed: 0, planned: Math.ceil(plannedMs / 1_000), vus: 0, completed: 0, rate: 0, refused: 0, status0: 0, errors: 0, cpu: 0 });
    const ticker = setInterval(() => {
      const me = self.sample();
      cpuPerSecond.push(me.cpuPercent);
      lagPerSecond.push(me.lagMaxMs);
      const sec = this.metrics.tick(this.activeVus, { runnerCpu: me.cpuPercent, runnerLagMaxMs: me.lagMaxMs, ...this.o.sample?.() });
      const t = this.metrics.totals();
      bar?.update(Math.min(Math.ceil(plannedMs / 1_000), Math.round(sec.t)), {
        elapsed: Math.round(sec.t),
        vus: this.activeVus,
        completed: t.completed,
        rate: sec.completed,
        refused: t.refused,
        status0: t.status0,
        errors: t.errors - t.status0,
        cpu: me.cpuPercent,
      });
    }, 1_000);
    try {
      await Promise.all(Object.entries(this.o.file.scenarios).map(([name, s]) => this.runScenario(name, s)));
    } finally {
      clearInterval(ticker);
      bar?.stop();
    }
    this.metrics.tick(this.activeVus, this.o.sample?.() ?? {});
    const report = self.stop();
    const durationMs = Date.now() - this.startedAt;
    const roles = this.metrics.summaries();
    const completed = Object.values(roles).reduce((n, r) => n + r.outcomes.completed, 0);
    const result: RunResult = {
      scenario: this.o.file.name,
      title: this.o.file.title,
      baseUrl: this.o.baseUrl,
      transport: this.o.transport ?? 'sse',
      startedAt: new Date(this.startedAt).toISOString(),
      durationMs,
      scenarios: this.o.file.scenarios,
      deadlines: this.deadlines,
      roles,
      seconds: this.metrics.seconds,
      droppedIterations: this.metrics.droppedIterations,
      peakVus: this.peakVus,
      completedPerSec: Math.round((completed / (durationMs / 1_000)) * 10) / 10,
      ...(this.o.waitSec !== undefined ? { waitSec: this.o.waitSec, waits: this.metrics.waits } : {}),
      runner: { ...report, cpuPercentPerSecond: cpuPerSecond, lagMaxMsPerSecond: lagPerSecond },
    };
    this.metrics.destroy();
    await this.pool.destroy().catch(() => undefined);
    return result;
  }
}
