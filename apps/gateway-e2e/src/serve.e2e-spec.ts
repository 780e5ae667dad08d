import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, httpOk, pingRedis, repoRoot, startLocalRedis, waitFor, type RedisHandle } from '@traffic-dam/stack';

// `npx nx serve gateway` runs libs/stack/src/serve-gateway.ts after the build; called directly
// here so the test holds its pid (nx adds a process between).
interface Serve {
  proc: ChildProcess;
  output: () => string;
  exited: Promise<number | null>;
}

function serve(env: NodeJS.ProcessEnv): Serve {
  let out = '';
  const proc = spawn(process.execPath, ['--import', 'tsx', 'libs/stack/src/serve-gateway.ts'], {
    cwd: repoRoot(),
    env: { ...process.env, LOG_LEVEL: 'warn', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  proc.stdout?.on('data', (b: Buffer) => (out += b.toString()));
  proc.stderr?.on('data', (b: Buffer) => (out += b.toString()));
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
  return { proc, output: () => out, exited };
}

/** The `serve:` lines (the gateway's own JSON logs aside). */
const lines = (s: Serve): string[] => s.output().split('\n').filter((l) => l.startsWith('serve:'));

describe('npx nx serve gateway', () => {
  let redis: RedisHandle;

  beforeAll(async () => {
    redis = await startLocalRedis({ dir: mkdtempSync(join(tmpdir(), 'td-serve-')) });
  });

  afterAll(async () => {
    await redis?.stop();
  });

  it('says in one line that REDIS_URL does not answer, and exits 1', async () => {
    const dead = await freePort();
    const s = serve({ REDIS_URL: `redis://:secret@127.0.0.1:${dead}`, PORT: String(await freePort()) });
    expect(await s.exited).toBe(1);
    expect(lines(s)).toEqual([`serve: Redis at redis://***@127.0.0.1:${dead} (REDIS_URL) does not answer or refuses the password: start it, or unset REDIS_URL and this starts one`]);
  });

  it('reuses a Redis that answers, starts the worker, serves; Ctrl-C stops what it started and only that', async () => {
    const port = await freePort();
    const s = serve({ REDIS_URL: redis.url, PORT: String(port) });
    try {
      await waitFor('serving', () => lines(s).some((l) => l.includes('Ctrl-C stops it')), { timeoutMs: 60_000, pollMs: 100 });
      expect(lines(s)[0]).toBe(`serve: Redis: ${redis.url} (reused)`);
      expect(lines(s)[1]).toMatch(/^serve: AI worker: started on http:\/\/127\.0\.0\.1:(\d+)/);
      const workerUrl = /started on (http:\/\/127\.0\.0\.1:\d+)/.exec(lines(s)[1] ?? '')?.[1] ?? '';
      const res = await fetch(`http://127.0.0.1:${port}/health/ready`);
      expect(res.status).toBe(200);
      expect(await httpOk(`${workerUrl}/health`)).toBe(true);

      s.proc.kill('SIGINT');
      expect(await s.exited).toBe(0);
      expect(await httpOk(`http://127.0.0.1:${port}/health/live`).catch(() => false)).toBe(false);
      expect(await httpOk(`${workerUrl}/health`).catch(() => false)).toBe(false);
      // The Redis it found is not its to stop.
      expect(await pingRedis(redis.url)).toBe(true);
    } finally {
      s.proc.kill('SIGKILL');
    }
  }, 90_000);
});
