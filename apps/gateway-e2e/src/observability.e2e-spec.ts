import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ManagedChild, SseClient, ask, freePort, repoRoot, waitFor, type ChatSession, type Stack } from '@traffic-dam/stack';
import { startE2eStack } from './e2e-stack';

const root = repoRoot();
const DASHBOARD = join(root, 'infra/grafana/dashboards/traffic-dam.json');
const RULES = join(root, 'infra/prometheus/alerts.yml');
const SLOTS = 3;

/** Every `td_` metric name the dashboard and the alert rules use (histogram series reduced to their family). */
function metricNamesUsed(): string[] {
  const text = readFileSync(DASHBOARD, 'utf8') + '\n' + readFileSync(RULES, 'utf8');
  const names = new Set<string>();
  for (const m of text.matchAll(/\btd_[a-z0-9_]+/g)) names.add(m[0].replace(/_(bucket|sum|count)$/, ''));
  return [...names].sort();
}

/** Metric families a /metrics text declares (`# TYPE name type`). */
function exported(text: string): Set<string> {
  const out = new Set<string>();
  for (const line of text.split('\n')) {
    const m = /^# TYPE (\S+) \S+/.exec(line);
    if (m?.[1]) out.add(m[1]);
  }
  return out;
}

interface PromVector {
  metric: Record<string, string>;
  value: [number, string];
}

function prometheusBinary(): string {
  for (const p of ['/usr/bin/prometheus', '/usr/local/bin/prometheus']) {
    try {
      execFileSync(p, ['--version'], { stdio: 'ignore' });
      return p;
    } catch {
      // next
    }
  }
  throw new Error("prometheus not found: scripts/setup.sh installs Debian's prometheus package");
}

describe('observability: the dashboard and alert rules against a live stack, scraped by a real Prometheus', () => {
  let stack: Stack;
  let prom: ManagedChild | undefined;
  let promUrl = '';
  const streams: SseClient[] = [];
  const sessions: ChatSession[] = [];

  async function query(expr: string): Promise<PromVector[]> {
    const res = await fetch(`${promUrl}/api/v1/query?query=${encodeURIComponent(expr)}`, { signal: AbortSignal.timeout(2_000) });
    const body = (await res.json()) as { status: string; data: { resultType: string; result: PromVector[] } };
    if (body.status !== 'success') throw new Error(`query ${expr}: ${JSON.stringify(body)}`);
    return body.data.result;
  }

  async function scalar(expr: string): Promise<number | null> {
    const r = await query(expr);
    return r.length === 1 && r[0] ? Number(r[0].value[1]) : null;
  }

  beforeAll(async () => {
    stack = await startE2eStack({ env: { LOG_LEVEL: 'warn', DAM_SLOTS_PER_INSTANCE: String(SLOTS), AI_SWEEP_MS: '500' } });
    const port = await freePort();
    promUrl = `http://127.0.0.1:${port}`;
    const dir = stack.opts.dir;
    // The compose config finds gateways through Docker's DNS; here they are on known ports. The
    // rule file is the real one.
    const config = [
      'global:',
      '  scrape_interval: 1s',
      '  evaluation_interval: 1s',
      'rule_files:',
      `  - ${RULES}`,
      'scrape_configs:',
      '  - job_name: gateway',
      '    static_configs:',
      `      - targets: [${stack.gateways.map((g) => `'127.0.0.1:${g.port}'`).join(', ')}]`,
      '',
    ].join('\n');
    writeFileSync(join(dir, 'prometheus.yml'), config);
    prom = new ManagedChild({
      name: 'prometheus',
      command: prometheusBinary(),
      args: [
        `--config.file=${join(dir, 'prometheus.yml')}`,
        `--storage.tsdb.path=${join(dir, 'prometheus-data')}`,
        `--web.listen-address=127.0.0.1:${port}`,
        '--log.level=warn',
      ],
      logFile: join(dir, 'prometheus.log'),
    });
    await waitFor('prometheus ready', async () => (await fetch(`${promUrl}/-/ready`)).ok, 30_000, prom);
  });

  afterAll(async () => {
    for (const s of streams) s.close();
    await prom?.stop();
    await stack?.stop();
  });

  it('every metric the dashboard and the rules name is exported by each running gateway', async () => {
    const names = metricNamesUsed();
    // The dashboard covers the dam, refusals, answers, breaker, AI queue, DLQ, fallback and the
    // process; far fewer names would mean the extraction broke, not that all is well.
    expect(names.length).toBeGreaterThanOrEqual(25);
    for (const g of stack.gateways) {
      const have = exported(await (await fetch(`${g.url}/metrics`)).text());
      const missing = names.filter((n) => !have.has(n));
      expect({ gateway: g.index, missing }).toEqual({ gateway: g.index, missing: [] });
    }
  });

  it('Prometheus scrapes both gateways and reads the dam back through its HTTP API', async () => {
    await waitFor('both targets up', async () => (await query('up{job="gateway"} == 1')).length === 2, { pollMs: 250 });
    await waitFor('capacity scraped', async () => (await scalar(`max(td_dam_global_capacity)`)) === 2 * SLOTS, { pollMs: 250 });

    for (let i = 0; i < 4; i++) {
      const sse = await new SseClient(`${stack.url}/chat/stream`).open();
      streams.push(sse);
      sessions.push(await sse.session());
    }
    // What Prometheus stored equals what the gateways say in /dam.
    await waitFor('4 sessions held, as Prometheus sees it', async () => (await scalar('sum(td_dam_held)')) === 4, { pollMs: 250 });
    const views = (await Promise.all(stack.gateways.map(async (g) => (await fetch(`${g.url}/dam`)).json()))) as Array<{
      held: number;
      global: { used: number; capacity: number } | null;
    }>;
    expect(views.reduce((n, v) => n + v.held, 0)).toBe(4);
    await waitFor('global used scraped', async () => (await scalar('max(td_dam_global_used)')) === 4, { pollMs: 250 });
    const perInstance = await query('td_dam_held');
    expect(perInstance).toHaveLength(2);
    expect(new Set(perInstance.map((v) => v.metric['instance_id'])).size).toBe(2);
  });

  it('answers show up in Prometheus as time to first token and answer latency', async () => {
    const sse = streams[0];
    const session = sessions[0];
    if (!sse || !session) throw new Error('no stream from the previous test');
    const r = await ask(stack.url, session, 'how fast was that?');
    expect(r.status).toBe(202);
    const { messageId } = r.body as { messageId: string };
    await sse.waitFor((e) => e.event === 'done' && (e.data as { messageId: string }).messageId === messageId, 10_000);
    await waitFor('ttft scraped', async () => ((await scalar('sum(td_answer_ttft_seconds_count)')) ?? 0) >= 1, { pollMs: 250 });
    await waitFor(
      'answer latency scraped',
      async () => ((await scalar('sum(td_answer_duration_seconds_count{outcome="done"})')) ?? 0) >= 1,
      { pollMs: 250 },
    );
    // The dashboard's p95 panel has a value, and it is a plausible one (the worker's TTFT is 200 ms).
    await waitFor(
      'ttft p95 computed',
      async () => {
        const p95 = await scalar('histogram_quantile(0.95, sum by (le) (rate(td_answer_ttft_seconds_bucket[1m])))');
        return p95 !== null && p95 > 0 && p95 < 10;
      },
      { pollMs: 250 },
    );
  });

  it('runs every Prometheus query of the dashboard without error, and its overview stats have values', async () => {
    interface Target {
      expr?: string;
      datasource?: { uid?: string };
    }
    interface Panel {
      type: string;
      title: string;
      targets?: Target[];
    }
    const panels = (JSON.parse(readFileSync(DASHBOARD, 'utf8')) as { panels: Panel[] }).panels;
    const queries = panels.flatMap((p) =>
      (p.targets ?? []).filter((t) => t.datasource?.uid === 'td-prometheus' && t.expr).map((t) => ({ panel: p, expr: t.expr as string })),
    );
    expect(queries.length).toBeGreaterThanOrEqual(20);
    const failed: string[] = [];
    for (const { panel, expr } of queries) {
      const res = await fetch(`${promUrl}/api/v1/query?query=${encodeURIComponent(expr)}`);
      const body = (await res.json()) as { status: string; error?: string };
      if (body.status !== 'success') failed.push(`${panel.title}: ${expr}: ${body.error ?? res.status}`);
    }
    expect(failed).toEqual([]);
    const empty: string[] = [];
    for (const { panel, expr } of queries.filter((q) => q.panel.type === 'stat')) {
      if ((await query(expr)).length === 0) empty.push(`${panel.title}: ${expr}`);
    }
    expect(empty).toEqual([]);
  });

  it('loads every alert rule, evaluates each without error, and the budget alert goes pending when the budget fills', async () => {
    interface Rule {
      name: string;
      health: string;
      lastError?: string;
      type: string;
    }
    const rules = async (): Promise<Rule[]> => {
      const body = (await (await fetch(`${promUrl}/api/v1/rules`)).json()) as { data: { groups: Array<{ rules: Rule[] }> } };
      return body.data.groups.flatMap((g) => g.rules);
    };
    const declared = [...readFileSync(RULES, 'utf8').matchAll(/- alert: (\w+)/g)].map((m) => m[1]);
    await waitFor('every rule evaluated', async () => (await rules()).every((r) => r.health !== 'unknown'), { pollMs: 250 });
    const loaded = await rules();
    expect(loaded.map((r) => r.name).sort()).toEqual([...declared].sort());
    expect(loaded.filter((r) => r.health !== 'ok').map((r) => `${r.name}: ${r.lastError ?? r.health}`)).toEqual([]);

    // Fill the budget (capacity 2 x SLOTS): used/capacity = 1 > 0.9.
    while (streams.length < 2 * SLOTS) {
      const sse = await new SseClient(`${stack.url}/chat/stream`).open();
      streams.push(sse);
      sessions.push(await sse.session());
    }
    const alerts = async (): Promise<Array<{ labels: Record<string, string>; state: string }>> =>
      ((await (await fetch(`${promUrl}/api/v1/alerts`)).json()) as { data: { alerts: Array<{ labels: Record<string, string>; state: string }> } })
        .data.alerts;
    await waitFor(
      'TdDamBudgetNearFull pending',
      async () => (await alerts()).some((a) => a.labels['alertname'] === 'TdDamBudgetNearFull' && a.state === 'pending'),
      { pollMs: 250 },
    );
    // Healthy otherwise: a worker is alive, Redis answers, the breaker is closed.
    const others = (await alerts()).map((a) => a.labels['alertname']).filter((n) => n !== 'TdDamBudgetNearFull');
    expect(others).toEqual([]);
  });
});
