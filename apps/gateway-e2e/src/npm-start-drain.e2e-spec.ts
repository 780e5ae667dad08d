import { spawn, type ChildProcess } from 'node:child_process';
import { SseClient, ask, freePort, repoRoot, waitFor } from '@traffic-dam/stack';

// What the README's operations guide says to do, done as written: `kill -TERM <pid>` of one
// gateway of `npm start` drains it, it exits 0 and comes back on the same port.

async function startNpm(port: number): Promise<{ npm: ChildProcess; output: () => string }> {
  let out = '';
  const npm = spawn('npm', ['start', '--', '--port', String(port), '--quiet'], {
    cwd: repoRoot(),
    detached: true, // its own process group, as a terminal would give it
    env: { ...process.env, SKIP_BUILD: '1', STACK_GATEWAYS: '2', DRAIN_GRACE_MS: '300' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  npm.stdout?.on('data', (b: Buffer) => (out += b.toString()));
  npm.stderr?.on('data', (b: Buffer) => (out += b.toString()));
  await waitFor('npm start is up', () => {
    if (npm.exitCode !== null) throw new Error(`npm start exited early:\n${out}`);
    return out.includes('Traffic Dam is up');
  }, { timeoutMs: 90_000, pollMs: 200 }).catch((err: unknown) => {
    throw new Error(`${err instanceof Error ? err.message : String(err)}\n${out}`);
  });
  return { npm, output: () => out };
}

describe('npm start: drain one gateway with kill -TERM', () => {
  let npm: ChildProcess | undefined;

  afterAll(async () => {
    if (npm?.pid !== undefined && npm.exitCode === null) {
      process.kill(-npm.pid, 'SIGTERM');
      await waitFor('npm start stopped', () => npm?.exitCode !== null || npm?.signalCode !== null).catch(() => undefined);
    }
  });

  it('expires its sessions (draining), exits 0, comes back on the same port; the edge keeps serving', async () => {
    const port = await freePort();
    const started = await startNpm(port);
    npm = started.npm;
    const line = /gateway 0 +(http:\/\/127\.0\.0\.1:\d+) +\(pid (\d+)\)/.exec(started.output());
    if (!line) throw new Error(`no gateway 0 line in:\n${started.output()}`);
    const [, gwUrl, pid] = line as unknown as [string, string, string];

    const sse = await new SseClient(`${gwUrl}/chat/stream`).open();
    expect(sse.status).toBe(200);
    await sse.session();
    process.kill(Number(pid), 'SIGTERM');
    const expired = await sse.waitFor((e) => e.event === 'expired', 10_000);
    expect(expired.data).toEqual({ reason: 'draining' });

    await waitFor('gateway 0 restarted', () => started.output().includes('gateway 0 is back'), { pollMs: 100 });
    expect(started.output()).toContain(`gateway 0 drained and exited 0; starting it again on ${gwUrl}`);
    const live = (await (await fetch(`${gwUrl}/health/live`)).json()) as { pid: number };
    expect(live.pid).not.toBe(Number(pid));
    expect((await fetch(`${gwUrl}/health/ready`)).status).toBe(200);

    // Through nginx the service answers all along.
    const edge = await new SseClient(`http://127.0.0.1:${port}/chat/stream`).open();
    expect(edge.status).toBe(200);
    const s = await edge.session();
    expect((await ask(`http://127.0.0.1:${port}`, s, 'still there?')).status).toBe(202);
    await edge.waitFor((e) => e.event === 'done');
    edge.close();
  }, 150_000);
});
