import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { freePort, repoRoot, waitFor } from '@traffic-dam/stack';

interface Proc {
  pid: number;
  ppid: number;
  cmd: string;
}

function processes(): Proc[] {
  const out: Proc[] = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      const cmd = readFileSync(`/proc/${d}/cmdline`, 'utf8').replace(/\0/g, ' ').trim();
      out.push({ pid: Number(d), ppid, cmd });
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

function descendants(root: number): Proc[] {
  const all = processes();
  const found: Proc[] = [];
  const queue = [root];
  while (queue.length > 0) {
    const p = queue.shift() as number;
    for (const c of all.filter((x) => x.ppid === p)) {
      found.push(c);
      queue.push(c.pid);
    }
  }
  return found;
}

function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

async function startNpm(port: number): Promise<{ npm: ChildProcess; output: () => string }> {
  let out = '';
  const npm = spawn('npm', ['start', '--', '--port', String(port), '--quiet'], {
    cwd: repoRoot(),
    detached: true, // its own process group, as a terminal would give it
    env: { ...process.env, SKIP_BUILD: '1', STACK_GATEWAYS: '2' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  npm.stdout?.on('data', (b: Buffer) => (out += b.toString()));
  npm.stderr?.on('data', (b: Buffer) => (out += b.toString()));
  await waitFor(
    'npm start is up',
    () => {
      if (npm.exitCode !== null) throw new Error(`npm start exited early:\n${out}`);
      return out.includes('Traffic Dam is up');
    },
    { timeoutMs: 90_000, pollMs: 200, detail: () => out },
  );
  return { npm, output: () => out };
}

async function exited(p: ChildProcess): Promise<boolean> {
  return waitFor('npm start exits', () => p.exitCode !== null || p.signalCode !== null, { pollMs: 100 }).then(
    () => true,
    () => false,
  );
}

describe('npm start', () => {
  it.each([
    ['SIGTERM to npm', (npm: ChildProcess) => npm.kill('SIGTERM')],
    ['Ctrl-C (SIGINT to the process group)', (npm: ChildProcess) => process.kill(-(npm.pid as number), 'SIGINT')],
  ])('starts Redis, the worker, 2 gateways and nginx; %s leaves no process behind', async (_, stop) => {
    const port = await freePort();
    const { npm, output } = await startNpm(port);
    const started = descendants(npm.pid as number);
    const kinds = (re: RegExp) => started.filter((p) => re.test(p.cmd));
    try {
      expect(output()).toContain(`http://127.0.0.1:${port}/chat/stream`);
      expect(kinds(/redis-server/)).toHaveLength(1);
      expect(kinds(/^nginx: master/).length + kinds(/^nginx -p/).length).toBe(1);
      expect(kinds(/dist\/apps\/gateway\/main\.js/)).toHaveLength(2);
      expect(kinds(/-m ai_worker/)).toHaveLength(1);
      const live = await fetch(`http://127.0.0.1:${port}/health/ready`);
      expect(live.status).toBe(200);
    } finally {
      stop(npm);
      const gone = await exited(npm);
      if (!gone) process.kill(-(npm.pid as number), 'SIGKILL');
      expect(gone).toBe(true);
    }
    await waitFor('every process it started gone', () => !started.some((p) => alive(p.pid)), { pollMs: 100 }).catch(() => undefined);
    const left = started.filter((p) => alive(p.pid));
    expect(left.map((p) => p.cmd)).toEqual([]);
    // Its last line can still be in the pipe when the process that wrote it is gone.
    await waitFor('npm start says it stopped', () => output().includes('nothing left running'), { timeoutMs: 10_000, pollMs: 50 }).catch(() => undefined);
    expect(output()).toContain('nothing left running');
  });
});
