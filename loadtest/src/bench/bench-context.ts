import http from 'node:http';
import { Redis } from 'ioredis';
import type { RedisHandle } from '@traffic-dam/stack';
import { openStream, request, type Response, type Window } from './clients';
import { Processes, type Server } from './processes';
import { CpuMeter, SelfCpu, childPids, runQueueWaitMicros } from './proc';
import { checkRow, type PairRow } from './report';

/** The benchmark's settings (gateway.bench.ts reads them from the command line). */
export interface BenchOptions {
  /** Measured window of each request phase, s. */
  seconds: number;
  warmupMs: number;
  /** autocannon connections. */
  connections: number;
  /** Closed loops of the benchmark's own clients. */
  concurrency: number;
  streams: number;
  tokensPerSec: number;
  /** The worker's reply window in the streaming phase, ms (0: one message per reply). */
  batchMs: number;
  streamSeconds: number;
  idleSessions: number;
  idleHold: number;
  edgeSeconds: number;
  /** Request phases: gateway and bare measured in turn this many times, the median kept. */
  reps: number;
}

export const log = (line: string): void => void process.stderr.write(`${line}\n`);

/**
 * CPU meters over the server, Redis and other processes, and this process (the load generator);
 * and how long the server's event-loop thread waited for a CPU (a busy machine, not the server).
 */
export class Meters implements Window {
  private readonly meters: Record<string, CpuMeter>;
  private readonly self = new SelfCpu();
  readonly result: Record<string, { micros: number; coreShare: number }> = {};
  clientCores = NaN;
  /** Share of the window the waited-on process's main thread was runnable but not running. */
  waitShare = NaN;
  private wait0 = NaN;
  private t0 = 0;
  constructor(groups: Record<string, () => Array<number | undefined>>, private readonly waitOf?: number) {
    this.meters = Object.fromEntries(Object.entries(groups).map(([k, pids]) => [k, new CpuMeter(pids)]));
  }
  start(): void {
    for (const m of Object.values(this.meters)) m.start();
    this.self.start();
    this.wait0 = runQueueWaitMicros(this.waitOf);
    this.t0 = performance.now();
  }
  stop(): void {
    for (const [k, m] of Object.entries(this.meters)) this.result[k] = m.stop();
    this.clientCores = this.self.stop();
    this.waitShare = (runQueueWaitMicros(this.waitOf) - this.wait0) / ((performance.now() - this.t0) * 1e3);
  }
  micros(k: string): number {
    return this.result[k]?.micros ?? NaN;
  }
  cores(k: string): number {
    return this.result[k]?.coreShare ?? NaN;
  }
}

/** The response as a bare server replays it: Node sets date, framing and keep-alive itself. */
export function captured(res: Response): { status: number; headers: Record<string, string>; body: string } {
  const headers: Record<string, string> = {};
  for (const [k, v] of Object.entries(res.headers)) {
    if (v === undefined || ['date', 'transfer-encoding', 'keep-alive'].includes(k)) continue;
    if (k === 'connection' && String(v).toLowerCase() !== 'close') continue;
    headers[k] = Array.isArray(v) ? v.join(', ') : v;
  }
  return { status: res.status, headers, body: res.body };
}

/** What every phase shares: the processes, the one Redis, the notes, the settings. */
export class BenchContext {
  readonly procs: Processes;
  /** Captures go over keep-alive, as autocannon's requests do: a `Connection: close` is then the server's own. */
  readonly keepAlive = new http.Agent({ keepAlive: true, maxSockets: 4 });
  redis!: RedisHandle;
  private admin?: Redis;
  readonly notes: string[] = [];
  /** Stream response headers of the gateway, for the bare server to send the same. */
  private streamHeaders: Record<string, string> | null = null;

  constructor(
    readonly dir: string,
    readonly opt: BenchOptions,
    /** Extra gateway settings (--env). */
    private readonly gatewayEnv: Record<string, string>,
  ) {
    this.procs = new Processes(dir);
  }

  async start(): Promise<void> {
    this.redis = await this.procs.redis();
    this.admin = new Redis(this.redis.url, { maxRetriesPerRequest: 1 });
  }

  async stop(): Promise<void> {
    this.keepAlive.destroy();
    this.admin?.disconnect();
    await this.procs.stopAll();
  }

  /** Redis as new between phases: no dam instance, session, queue or heartbeat of the last one. */
  async fresh(): Promise<void> {
    await this.admin?.flushall();
  }

  gateway(env: Record<string, string> = {}): Promise<Server> {
    return this.procs.gateway(this.redis.url, { ...this.gatewayEnv, ...env });
  }

  meters(server: Server, extra: Record<string, () => Array<number | undefined>> = {}): Meters {
    // The server's whole process tree: GATEWAY_WORKERS > 1 forks its instances.
    const tree = (): Array<number | undefined> => (server.pid ? [server.pid, ...childPids(server.pid)] : []);
    return new Meters({ server: tree, redis: () => [this.redis.child?.pid], ...extra }, server.pid);
  }

  async streamHeadersOf(gw: Server): Promise<Record<string, string>> {
    if (!this.streamHeaders) {
      const s = await openStream(gw.url);
      if (!s.session) {
        s.close();
        throw new Error(`the gateway refused a stream: ${s.status} ${s.code ?? ''}`);
      }
      // Ended, not only closed: a closed stream keeps its slot for a resume, and the phase needs them all.
      const done = await request(`${gw.url}/chat/sessions/${s.session.sessionId}`, { method: 'DELETE', headers: { Authorization: `Bearer ${s.session.token}` } });
      s.close();
      if (done.status !== 204) throw new Error(`DELETE of the header probe's session answered ${done.status}`);
      this.streamHeaders = captured({ status: s.status, headers: s.headers, body: '' }).headers;
    }
    return this.streamHeaders;
  }
}

export function checkPair(ctx: BenchContext, row: PairRow): void {
  ctx.notes.push(...checkRow(`${row.id}, gateway`, row.gateway), ...checkRow(`${row.id}, bare`, row.bareFigures));
}
