import { execFileSync } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { cpus, loadavg, release, totalmem } from 'node:os';

/** Clock ticks per second of /proc/<pid>/stat (`getconf CLK_TCK`; 100 on Linux). */
let ticksPerSec = 0;
function clockTicks(): number {
  if (!ticksPerSec) {
    try {
      ticksPerSec = Number(execFileSync('getconf', ['CLK_TCK']).toString().trim()) || 100;
    } catch {
      ticksPerSec = 100;
    }
  }
  return ticksPerSec;
}

export interface StatLine {
  ppid: number;
  /** utime + stime, in clock ticks: CPU of every thread of the process. */
  ticks: number;
}

/** Parses a /proc/<pid>/stat line; the command name in parentheses may hold spaces and parentheses. */
export function parseStat(line: string): StatLine {
  const close = line.lastIndexOf(')');
  if (close < 0) throw new Error(`not a /proc stat line: ${line.slice(0, 80)}`);
  // After ") ": state(3) ppid(4) ... utime(14) stime(15), numbered from 1 with pid and comm first.
  const f = line.slice(close + 2).trim().split(/\s+/);
  const at = (field: number): number => Number(f[field - 3]);
  return { ppid: at(4), ticks: at(14) + at(15) };
}

/** CPU time of a process (every thread) so far, in µs; NaN when it is gone. */
export function cpuMicros(pid: number | undefined): number {
  if (!pid) return NaN;
  try {
    return (parseStat(readFileSync(`/proc/${pid}/stat`, 'utf8')).ticks * 1e6) / clockTicks();
  } catch {
    return NaN;
  }
}

/** VmRSS of a process in bytes (from /proc/<pid>/status); NaN when it is gone. */
export function rssBytes(pid: number | undefined): number {
  if (!pid) return NaN;
  try {
    const m = /^VmRSS:\s+(\d+)\s+kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : NaN;
  } catch {
    return NaN;
  }
}

/**
 * Time the process's main thread (for Node: the event loop) has spent runnable but waiting for a
 * CPU, in µs (/proc/<pid>/schedstat, second field); NaN where the kernel does not keep it. A
 * share of the window well above zero means the machine, not the process, set the pace.
 */
export function runQueueWaitMicros(pid: number | undefined): number {
  if (!pid) return NaN;
  try {
    return Number(readFileSync(`/proc/${pid}/schedstat`, 'utf8').trim().split(/\s+/)[1]) / 1e3;
  } catch {
    return NaN;
  }
}

/** The processes whose parent is `pid` (nginx's workers under its master). */
export function childPids(pid: number): number[] {
  const out: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      if (parseStat(readFileSync(`/proc/${name}/stat`, 'utf8')).ppid === pid) out.push(Number(name));
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

/** CPU used by a set of processes between start() and stop(), in µs and as a share of one core. */
export class CpuMeter {
  private before: number[] = [];
  private t0 = 0;
  constructor(private readonly pids: () => Array<number | undefined>) {}

  start(): void {
    this.before = this.pids().map(cpuMicros);
    this.t0 = performance.now();
  }

  stop(): { micros: number; coreShare: number } {
    const after = this.pids().map(cpuMicros);
    const micros = after.reduce((sum, v, i) => sum + (v - (this.before[i] ?? NaN)), 0);
    const wallUs = (performance.now() - this.t0) * 1e3;
    return { micros, coreShare: micros / wallUs };
  }
}

/** This process's own CPU over a window (the load generator), as a share of one core. */
export class SelfCpu {
  private before = process.cpuUsage();
  private t0 = performance.now();
  start(): void {
    this.before = process.cpuUsage();
    this.t0 = performance.now();
  }
  stop(): number {
    const d = process.cpuUsage(this.before);
    return (d.user + d.system) / ((performance.now() - this.t0) * 1e3);
  }
}

export interface MachineInfo {
  date: string;
  nproc: number;
  cpuModel: string;
  memGiB: number;
  kernel: string;
  node: string;
  nginx: string;
  redis: string;
  loadavg: number[];
}

function versionOf(command: string, pattern: RegExp): string {
  try {
    return pattern.exec(execFileSync('sh', ['-c', `${command} 2>&1`]).toString())?.[1] ?? 'unknown';
  } catch {
    return 'unknown';
  }
}

export function machineInfo(): MachineInfo {
  return {
    date: new Date().toISOString(),
    nproc: cpus().length,
    cpuModel: cpus()[0]?.model ?? 'unknown',
    memGiB: Math.round((totalmem() / 2 ** 30) * 10) / 10,
    kernel: release(),
    node: process.version,
    nginx: versionOf('nginx -v', /nginx\/(\S+)/),
    redis: versionOf('redis-server --version', /v=(\S+)/),
    loadavg: loadavg().map((l) => Math.round(l * 100) / 100),
  };
}
