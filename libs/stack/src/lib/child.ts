import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, createWriteStream, mkdirSync, openSync } from 'node:fs';
import { dirname } from 'node:path';

export interface ChildOptions {
  name: string;
  command: string;
  args: string[];
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  /** File that gets the child's stdout and stderr. */
  logFile: string;
  /** Copy each output line to our stdout, prefixed with the name. */
  echo?: boolean;
}

// The one wait helper lives in wait.ts; re-exported here for the starters that import it with ManagedChild.
export { waitFor } from './wait';

const alive = new Set<ManagedChild>();

// A stack that dies by an uncaught error must not leave servers behind.
process.once('exit', () => {
  for (const c of alive) c.killNow();
});

/** A child process we started and must stop: output to a log file, stop with SIGTERM then SIGKILL. */
export class ManagedChild {
  readonly proc: ChildProcess;
  private readonly exited: Promise<number | null>;
  private exitCode: number | null | undefined;

  constructor(readonly opts: ChildOptions) {
    mkdirSync(dirname(opts.logFile), { recursive: true });
    if (opts.echo) {
      const log = createWriteStream(opts.logFile, { flags: 'a' });
      this.proc = spawn(opts.command, opts.args, { cwd: opts.cwd, env: opts.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'] });
      const forward = (chunk: Buffer): void => {
        log.write(chunk);
        for (const line of chunk.toString().split('\n')) {
          if (line.length > 0) process.stdout.write(`[${opts.name}] ${line}\n`);
        }
      };
      this.proc.stdout?.on('data', forward);
      this.proc.stderr?.on('data', forward);
      this.proc.once('exit', () => log.end());
    } else {
      // Straight into the file: relaying every log line through this process would make the
      // test runner a bottleneck of what it measures.
      const fd = openSync(opts.logFile, 'a');
      this.proc = spawn(opts.command, opts.args, { cwd: opts.cwd, env: opts.env ?? process.env, stdio: ['ignore', fd, fd] });
      closeSync(fd);
    }
    alive.add(this);
    this.exited = new Promise((resolve) => {
      this.proc.once('exit', (code, signal) => {
        this.exitCode = code ?? (signal ? null : 0);
        alive.delete(this);
        resolve(this.exitCode);
      });
      this.proc.once('error', (err) => {
        process.stderr.write(`${opts.name}: spawn error: ${err.message}\n`);
        this.exitCode = null;
        alive.delete(this);
        resolve(null);
      });
    });
  }

  get pid(): number | undefined {
    return this.proc.pid;
  }

  get running(): boolean {
    return this.exitCode === undefined;
  }

  wait(): Promise<number | null> {
    return this.exited;
  }

  signal(sig: NodeJS.Signals): void {
    if (this.running) this.proc.kill(sig);
  }

  killNow(): void {
    this.signal('SIGKILL');
  }

  /** SIGTERM, then SIGKILL after graceMs if it is still there. */
  async stop(graceMs = 5_000): Promise<void> {
    if (!this.running) return;
    this.signal('SIGTERM');
    let timer: NodeJS.Timeout | undefined;
    const timedOut = await Promise.race([
      this.exited.then(() => false),
      new Promise<boolean>((resolve) => {
        timer = setTimeout(resolve, graceMs, true);
      }),
    ]);
    clearTimeout(timer);
    if (timedOut) {
      this.killNow();
      await this.exited;
    }
  }
}

/** True when GET url answers with a 2xx. */
export async function httpOk(url: string): Promise<boolean> {
  const res = await fetch(url, { signal: AbortSignal.timeout(1_000) });
  await res.arrayBuffer();
  return res.ok;
}
