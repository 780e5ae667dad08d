import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ManagedChild, SseClient, ask, freePort, repoRoot, waitFor } from '@traffic-dam/stack';

// The compose stack itself (infra/compose, `npm run stack:compose`) on this machine's container
// engine: images built from the repository's Dockerfiles on a Debian base, 3 gateway replicas
// behind nginx, Redis, the worker and Prometheus, each in its own container.

interface DamView {
  instanceId: string;
  global: { used: number; capacity: number; live: number; instances: string[] } | null;
}

const root = repoRoot();
// Lower case, as compose makes it (the labels carry its form).
const project = `td-e2e-${process.env['TD_RUN_ID'] ?? process.pid}`.toLowerCase();
const podmanHere = spawnSync('podman', ['--version']).status === 0;
// As root the script installs the engine itself; CI and TEST_REDIS=container never skip.
const required = process.env['CI'] === 'true' || process.env['TEST_REDIS'] === 'container';
const runnable = podmanHere || process.getuid?.() === 0 || required;
if (!runnable) process.stdout.write('compose e2e skipped: no podman here and not root (npm test as root installs it)\n');

function podman(...args: string[]): string[] {
  return execFileSync('podman', args, { encoding: 'utf8' }).split('\n').filter(Boolean);
}

/** Containers, networks and volumes on the engine, as `kind name` lines. */
function engineObjects(): string[] {
  return [
    ...podman('ps', '-a', '--format', '{{.ID}} {{.Names}}').map((l) => `container ${l}`),
    // `podman` is the engine's default network, there before anything ran.
    ...podman('network', 'ls', '--format', '{{.Name}}').filter((n) => n !== 'podman').map((l) => `network ${l}`),
    ...podman('volume', 'ls', '--format', '{{.Name}}').map((l) => `volume ${l}`),
  ];
}

function ours(): string[] {
  const label = `label=com.docker.compose.project=${project}`;
  return [
    ...podman('ps', '-a', '--filter', label, '--format', '{{.ID}} {{.Names}}'),
    ...podman('network', 'ls', '--filter', label, '--format', '{{.Name}}'),
    ...podman('volume', 'ls', '--filter', label, '--format', '{{.Name}}'),
  ];
}

async function dam(url: string, timeoutMs = 2_000): Promise<DamView> {
  return (await (await fetch(`${url}/dam`, { signal: AbortSignal.timeout(timeoutMs) })).json()) as DamView;
}

function outcomes(streams: SseClient[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const s of streams) {
    const key = s.status === 200 ? '200' : `${s.status} ${(s.refusal as { code?: string } | undefined)?.code ?? String(s.refusal).slice(0, 60)}`;
    out[key] = (out[key] ?? 0) + 1;
  }
  return out;
}

(runnable ? describe : describe.skip)('the compose stack on the local engine: --scale gateway=3', () => {
  const dir = mkdtempSync(join(tmpdir(), 'td-compose-e2e-'));
  const logFile = join(dir, 'stack-compose.log');
  let script: ManagedChild;
  let before: string[] = [];
  let url = '';
  let promUrl = '';
  let engineDir = '';
  const containerIds = new Set<string>();
  let open: SseClient[] = [];

  beforeAll(async () => {
    if (podmanHere) before = engineObjects();
    const [port, promPort] = [await freePort(), await freePort()];
    url = `http://127.0.0.1:${port}`;
    promUrl = `http://127.0.0.1:${promPort}`;
    script = new ManagedChild({
      name: 'stack-compose',
      command: 'bash',
      args: ['scripts/stack-compose.sh', '--gateways', '3', '--port', String(port), '--prometheus-port', String(promPort), '--project', project],
      cwd: root,
      env: { ...process.env, DAM_SLOTS_PER_INSTANCE: '1000', LOG_LEVEL: 'warn' },
      logFile,
    });
    // Builds what is missing first (the images of a fresh machine: a few minutes).
    await waitFor('stack:compose is up', () => readFileSync(logFile, 'utf8').includes('is up.'), {
      timeoutMs: 360_000,
      pollMs: 250,
      child: script,
      detail: () => readFileSync(logFile, 'utf8').slice(-3_000),
    });
    engineDir = /DOCKER_HOST=unix:\/\/(\S+)\/podman\.sock/.exec(readFileSync(logFile, 'utf8'))?.[1] ?? '';
    for (const id of podman('ps', '-q', '--no-trunc', '--filter', `label=com.docker.compose.project=${project}`)) containerIds.add(id);
  }, 400_000);

  afterEach(() => {
    for (const s of open) s.close();
    open = [];
  });

  afterAll(async () => {
    // Whatever a failed test left: the script's own trap first, then by label.
    if (script?.running) await script.stop();
    if (podmanHere || spawnSync('podman', ['--version']).status === 0) {
      const label = `label=com.docker.compose.project=${project}`;
      const ids = podman('ps', '-aq', '--filter', label);
      if (ids.length) spawnSync('podman', ['rm', '-f', ...ids]);
      for (const n of podman('network', 'ls', '-q', '--filter', label)) spawnSync('podman', ['network', 'rm', '-f', n]);
      for (const v of podman('volume', 'ls', '-q', '--filter', label)) spawnSync('podman', ['volume', 'rm', '-f', v]);
    }
  }, 120_000);

  it('publishes only on 127.0.0.1; /dam through nginx shows 3 live instances and capacity 3,000; Prometheus in its container scrapes all three', async () => {
    expect(readFileSync(logFile, 'utf8')).toContain('Grafana, Loki and Alloy skipped');
    // redis, ai-worker, 3 gateways, nginx, prometheus: what the last test must find gone.
    expect(containerIds.size).toBe(7);
    const published = podman('ps', '--filter', `label=com.docker.compose.project=${project}`, '--format', '{{.Names}} {{.Ports}}').filter((l) => /->/.test(l));
    expect(published.map((l) => l.split(' ')[0]).sort()).toEqual([`${project}_nginx_1`, `${project}_prometheus_1`]);
    for (const l of published) expect(l).toMatch(/ 127\.0\.0\.1:\d+->\d+\/tcp$/);

    const view = await dam(url);
    expect(view.global).toMatchObject({ used: 0, capacity: 3_000, live: 3 });
    const instances = new Set(view.global?.instances);
    expect(instances.size).toBe(3);

    // Prometheus found each replica through DNS and scraped it: the dam's own series of all three.
    await waitFor('prometheus scrapes 3 gateways', async () => {
      const res = (await (await fetch(`${promUrl}/api/v1/query?query=td_dam_held`)).json()) as {
        data: { result: Array<{ metric: { instance_id: string; job: string } }> };
      };
      const scraped = new Set(res.data.result.filter((r) => r.metric.job === 'gateway').map((r) => r.metric.instance_id));
      return scraped.size === 3 && [...scraped].every((id) => instances.has(id));
    }, { timeoutMs: 30_000, pollMs: 500 });
    const targets = (await (await fetch(`${promUrl}/api/v1/targets`)).json()) as { data: { activeTargets: Array<{ labels: { job: string }; health: string }> } };
    expect(targets.data.activeTargets.filter((t) => t.labels.job === 'gateway').map((t) => t.health)).toEqual(['up', 'up', 'up']);
  });

  it('the answers of a 50-user lifecycle arrive (open, ask, stream, close)', async () => {
    const run = async (i: number): Promise<{ tokens: number; streamed: number }> => {
      const sse = await new SseClient(`${url}/chat/stream`).open(10_000);
      open.push(sse);
      expect(sse.status).toBe(200);
      const s = await sse.session();
      const res = await ask(url, s, `question ${i}: what does a dam do?`);
      expect(res.status).toBe(202);
      const { messageId } = res.body as { messageId: string };
      const end = await sse.waitFor((e) => (e.event === 'done' || e.event === 'error') && (e.data as { messageId?: string }).messageId === messageId, 60_000);
      expect(end.event).toBe('done');
      const streamed = sse.events.filter((e) => e.event === 'token' && (e.data as { messageId?: string }).messageId === messageId).length;
      const del = await fetch(`${url}/chat/sessions/${s.sessionId}`, { method: 'DELETE', headers: { Authorization: `Bearer ${s.token}` } });
      // With the problem body, so a refusal says which it was.
      expect({ status: del.status, body: del.status === 204 ? '' : await del.text() }).toEqual({ status: 204, body: '' });
      return { tokens: (end.data as { tokens: number }).tokens, streamed };
    };
    const runs = await Promise.all(Array.from({ length: 50 }, (_, i) => run(i)));
    expect(runs.every((r) => r.tokens > 0 && r.streamed === r.tokens)).toBe(true);
    await waitFor('sessions released', async () => (await dam(url)).global?.used === 0, 10_000);
  });

  it('3,500 streams at once: exactly 3,000 admitted, 500 refused with 429 dam_full', async () => {
    open = await Promise.all(Array.from({ length: 3_500 }, () => new SseClient(`${url}/chat/stream`).open(30_000)));
    expect(outcomes(open)).toEqual({ '200': 3_000, '429 dam_full': 500 });
    await waitFor('3,000 of 3,000 used', async () => {
      const g = (await dam(url)).global;
      return g?.used === 3_000 && g.capacity === 3_000;
    }, 5_000);
    for (const s of open) s.close();
    open = [];
    await waitFor('every slot released', async () => (await dam(url)).global?.used === 0, 15_000);
  });

  it('kill one gateway container: capacity 2,000 within 3 s, and nginx keeps opening streams', async () => {
    const [victim] = podman('ps', '-q', '--filter', `label=com.docker.compose.project=${project}`, '--filter', 'label=com.docker.compose.service=gateway');
    expect(victim).toBeDefined();
    const killedAt = Date.now();
    podman('kill', victim as string);
    // Asked every 50 ms without waiting for the last answer: nginx still sends some requests to
    // the dead replica's address (each waits for proxy_connect_timeout), the others answer.
    const seen = await new Promise<number | undefined>((resolve) => {
      const timer = setInterval(() => {
        if (Date.now() - killedAt > 3_000) {
          clearInterval(timer);
          resolve(undefined);
          return;
        }
        void dam(url, 3_000).then(
          (v) => {
            if (v.global?.capacity === 2_000 && v.global.live === 2 && Date.now() - killedAt <= 3_000) {
              clearInterval(timer);
              resolve(Date.now() - killedAt);
            }
          },
          () => undefined,
        );
      }, 50);
    });
    expect(seen).toBeDefined();
    process.stdout.write(`compose: capacity 2,000 through nginx ${seen} ms after podman kill\n`);
    // nginx still takes new streams: one sent to the dead address moves on after proxy_connect_timeout.
    const fresh = await Promise.all(Array.from({ length: 12 }, () => new SseClient(`${url}/chat/stream`).open(10_000)));
    open.push(...fresh);
    expect(outcomes(fresh)).toEqual({ '200': 12 });
  });

  it('SIGTERM to stack:compose brings it all down: no container, network, volume or engine process is left', async () => {
    script.signal('SIGTERM');
    expect(await script.wait()).toBe(0);
    expect(readFileSync(logFile, 'utf8')).toContain('down; no container');
    expect(ours()).toEqual([]);
    expect([...containerIds].filter((id) => spawnSync('podman', ['container', 'exists', id]).status === 0)).toEqual([]);
    const after = engineObjects();
    const appeared = after.filter((o) => !before.includes(o));
    // On a shared machine another run may have started something meanwhile; in CI nothing may remain.
    if (process.env['CI'] === 'true') expect(appeared).toEqual([]);
    expect(appeared.filter((o) => o.includes(project))).toEqual([]);
    const processes = execFileSync('ps', ['-eo', 'pid=,args='], { encoding: 'utf8' }).split('\n');
    expect(engineDir).not.toBe('');
    expect(processes.filter((p) => p.includes(engineDir))).toEqual([]);
    expect(processes.filter((p) => /conmon/.test(p) && [...containerIds].some((id) => p.includes(id)))).toEqual([]);
  }, 120_000);
});
