import { Counter, Histogram, Registry } from 'prom-client';
import { TalliedCounter, TalliedHistogram } from './tally';

// The samples of an exposition, each line's labels sorted: the registry orders a custom metric's
// labels differently from its own histogram's, which Prometheus does not see.
function samples(text: string): string[] {
  return text
    .split('\n')
    .filter((l) => l !== '' && !l.startsWith('#'))
    .map((l) => l.replace(/\{([^}]*)\}/, (_, inner: string) => `{${inner.split(',').sort().join(',')}}`))
    .sort();
}

function registry(): Registry {
  const r = new Registry();
  r.setDefaultLabels({ instance_id: 'gw-1' });
  return r;
}

describe('TalliedHistogram', () => {
  const buckets = [0.001, 0.01, 0.1, 1];
  const observations: Array<[Record<'route' | 'status', string>, number]> = [
    [{ route: '/chat/stream', status: '429' }, 0.00002],
    [{ route: '/chat/stream', status: '429' }, 0.001],
    [{ route: '/chat/stream', status: '200' }, 0.05],
    [{ route: '/chat/stream', status: '200' }, 2.5],
    [{ route: '/dam', status: '200' }, 0.1],
  ];

  it("renders exactly the samples prom-client's Histogram renders for the same observations", async () => {
    const ours = registry();
    const theirs = registry();
    const h = new TalliedHistogram({ name: 'td_x_seconds', help: 'x', labelNames: ['route', 'status'], buckets, registers: [ours] });
    const p = new Histogram({ name: 'td_x_seconds', help: 'x', labelNames: ['route', 'status'], buckets, registers: [theirs] });
    for (const [labels, v] of observations) {
      h.series(labels).observe(v);
      p.observe(labels, v);
    }
    const text = await ours.metrics();
    expect(samples(text)).toEqual(samples(await theirs.metrics()));
    expect(text).toContain('# TYPE td_x_seconds histogram');
    expect(text).toContain('td_x_seconds_count{route="/chat/stream",status="429",instance_id="gw-1"} 2');
  });

  it('counts a series looked up again into the same samples, and starts again on reset', async () => {
    const r = registry();
    const h = new TalliedHistogram({ name: 'td_y_seconds', help: 'y', labelNames: ['outcome'], buckets, registers: [r] });
    const held = h.series({ outcome: 'admitted' });
    held.observe(0.005);
    h.observe({ outcome: 'admitted' }, 0.5);
    expect(await r.metrics()).toContain('td_y_seconds_bucket{le="0.01",outcome="admitted",instance_id="gw-1"} 1');
    expect(await r.metrics()).toContain('td_y_seconds_sum{outcome="admitted",instance_id="gw-1"} 0.505');
    r.resetMetrics();
    expect(await r.metrics()).not.toContain('td_y_seconds_count');
  });
});

describe('TalliedCounter', () => {
  it("adds its tallies to the counter when scraped, beside the Counter's own inc()", async () => {
    const ours = registry();
    const theirs = registry();
    const c = new TalliedCounter({ name: 'td_z_total', help: 'z', labelNames: ['reason'], registers: [ours] });
    const p = new Counter({ name: 'td_z_total', help: 'z', labelNames: ['reason'], registers: [theirs] });
    const full = c.series({ reason: 'instance_full' });
    full.inc();
    full.inc();
    c.series({ reason: 'overloaded' }).inc();
    c.inc({ reason: 'overloaded' });
    p.inc({ reason: 'instance_full' }, 2);
    p.inc({ reason: 'overloaded' }, 2);
    expect(samples(await ours.metrics())).toEqual(samples(await theirs.metrics()));
    // A scrape moves the tallies into the counter once: the next one sees the same totals.
    full.inc();
    p.inc({ reason: 'instance_full' });
    expect(samples(await ours.metrics())).toEqual(samples(await theirs.metrics()));
    expect(await ours.metrics()).toContain('td_z_total{reason="instance_full",instance_id="gw-1"} 3');
  });
});
