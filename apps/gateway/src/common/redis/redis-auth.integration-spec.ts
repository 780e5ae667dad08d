import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Redis } from 'ioredis';
import { SseClient, ask, repoRoot, startLocalRedis, type RedisHandle } from '@traffic-dam/stack';
import { startInstance, type TestInstance } from '../../testing/instance';
import { WorkerDouble } from '../../testing/worker-double';

const run = promisify(execFile);

// Production Redis has a password (the compose file sets requirepass); the gateway and the DLQ
// command take it in REDIS_URL, and a missing or wrong one is an error, not a silent retry.
describe('Redis with a password (requirepass)', () => {
  let redis: RedisHandle;
  let admin: Redis;
  let worker: WorkerDouble;
  let inst: TestInstance | undefined;
  const password = randomBytes(16).toString('hex');
  let authUrl = '';

  beforeAll(async () => {
    redis = await startLocalRedis({ dir: mkdtempSync(join(tmpdir(), 'td-auth-')) });
    admin = new Redis(redis.url);
    await admin.config('SET', 'requirepass', password);
    authUrl = `redis://:${password}@127.0.0.1:${redis.port}`;
    worker = new WorkerDouble(authUrl);
    await worker.start();
  });

  afterAll(async () => {
    await inst?.app.close();
    await worker?.stop();
    admin?.disconnect();
    await redis?.stop();
  });

  it('serves with the password in REDIS_URL: ready, a stream, an answer', async () => {
    inst = await startInstance(authUrl, 'auth');
    const ready = await fetch(`${inst.url}/health/ready`);
    expect(ready.status).toBe(200);
    const sse = await new SseClient(`${inst.url}/chat/stream`).open();
    try {
      const s = await sse.session();
      const r = await ask(inst.url, s, 'behind a password?');
      expect(r.status).toBe(202);
      await sse.waitFor((e) => e.event === 'done', 5_000);
      expect(await admin.exists(`td:session:{${s.sessionId}}`)).toBe(1);
    } finally {
      sse.close();
    }
  });

  it('does not come up without it', async () => {
    const noAuth = startInstance(redis.url, 'noauth');
    const outcome = await Promise.race([
      noAuth.then(async (i) => {
        const status = (await fetch(`${i.url}/health/ready`)).status;
        await i.app.close();
        return `ready ${status}`;
      }, (err: unknown) => `boot failed: ${String(err)}`),
      new Promise<string>((r) => setTimeout(r, 8_000, 'hung').unref()),
    ]);
    // Either the boot fails on NOAUTH, or the instance reports itself not ready: never "ready 200".
    expect(outcome).toMatch(/^(boot failed: .*NOAUTH|ready 503)/);
  });

  it('npm run dlq reads the same REDIS_URL, password included', async () => {
    const cwd = repoRoot();
    const ok = await run('npm', ['run', '-s', 'dlq', '--', 'list'], { cwd, env: { ...process.env, REDIS_URL: authUrl }, timeout: 60_000 });
    expect(ok.stdout).toContain('dead letter(s)');
    const bad = await run('npm', ['run', '-s', 'dlq', '--', 'list'], { cwd, env: { ...process.env, REDIS_URL: `redis://:wrong@127.0.0.1:${redis.port}` }, timeout: 60_000 }).then(
      () => 'exit 0',
      (err: { code?: number; stderr?: string }) => `exit ${err.code}: ${err.stderr ?? ''}`,
    );
    expect(bad).toMatch(/^exit 1: .*(WRONGPASS|invalid username-password)/s);
  }, 120_000);
});
