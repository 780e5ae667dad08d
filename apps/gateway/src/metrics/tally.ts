import { Counter, type CounterConfiguration, type Metric, type Registry } from 'prom-client';

type Labels<L extends string> = Record<L, string>;

/**
 * The series of a metric by label set, found by a key of the values in the metric's label order.
 * Label values here are codes, routes and reasons, never free text, so a separator they cannot
 * contain is enough.
 */
class LabelSets<L extends string, S> {
  private readonly all = new Map<string, { labels: Labels<L>; series: S }>();

  constructor(
    private readonly names: readonly L[],
    private readonly make: () => S,
  ) {}

  of(labels: Labels<L>): S {
    let key = '';
    for (const n of this.names) key += `${labels[n]}\u0001`;
    let t = this.all.get(key);
    if (!t) this.all.set(key, (t = { labels: { ...labels }, series: this.make() }));
    return t.series;
  }

  values(): IterableIterator<{ labels: Labels<L>; series: S }> {
    return this.all.values();
  }

  clear(): void {
    this.all.clear();
  }
}

/** One label set of a TalliedCounter: a plain number until the next scrape adds it. */
export class CountSeries {
  n = 0;

  inc(): void {
    this.n++;
  }
}

/**
 * A prom-client counter whose hot callers count in plain numbers, added to it when it is scraped.
 * Under overload a refusal is counted tens of thousands of times a second, and prom-client
 * validates and hashes the labels on every inc(). Every Counter method still works as before.
 */
export class TalliedCounter<L extends string> extends Counter<L> {
  private readonly tallied: LabelSets<L, CountSeries>;

  constructor(config: Omit<CounterConfiguration<L>, 'collect'> & { labelNames: readonly L[] }) {
    super({
      ...config,
      collect(this: Counter<L>) {
        (this as TalliedCounter<L>).flush();
      },
    });
    this.tallied = new LabelSets(config.labelNames, () => new CountSeries());
  }

  /** The label set's count; hold it, or look it up per call (a Map lookup, no hashing). */
  series(labels: Labels<L>): CountSeries {
    return this.tallied.of(labels);
  }

  private flush(): void {
    for (const { labels, series } of this.tallied.values()) {
      if (series.n === 0) continue;
      this.inc(labels, series.n);
      series.n = 0;
    }
  }
}

/** One label set of a TalliedHistogram: its observations by bucket, their sum and count. */
export class HistogramSeries {
  private readonly counts: Float64Array;
  sum = 0;
  count = 0;

  constructor(private readonly bounds: readonly number[]) {
    this.counts = new Float64Array(bounds.length);
  }

  observe(value: number): void {
    const b = this.bounds;
    for (let i = 0; i < b.length; i++) {
      if (value <= (b[i] as number)) {
        this.counts[i]++;
        break;
      }
    }
    this.sum += value;
    this.count++;
  }

  /** Cumulative, as the exposition format counts buckets (`le`). */
  cumulative(): number[] {
    let acc = 0;
    return Array.from(this.counts, (c) => (acc += c));
  }
}

/** One sample as prom-client's registry renders it. */
interface Sample {
  metricName: string;
  labels: Record<string, string | number>;
  value: number;
}

export interface TalliedHistogramConfiguration<L extends string> {
  name: string;
  help: string;
  labelNames: readonly L[];
  /** Upper bounds, ascending (`+Inf` is added). */
  buckets: readonly number[];
  registers: Registry[];
}

/**
 * A histogram counted in plain numbers per label set, exposed as prom-client's Histogram exposes
 * it (the same `_bucket`, `_sum`, `_count` samples, with the registry's default labels). An
 * observation is a bucket search and three additions; prom-client's own histogram validates and
 * hashes the labels on each one, which on the refusal path costs as much as the refusal's checks.
 */
export class TalliedHistogram<L extends string> {
  readonly name: string;
  readonly help: string;
  readonly type = 'histogram' as const;
  readonly aggregator = 'sum' as const;
  private readonly bounds: readonly number[];
  private readonly all: LabelSets<L, HistogramSeries>;

  constructor(config: TalliedHistogramConfiguration<L>) {
    this.name = config.name;
    this.help = config.help;
    const bounds = (this.bounds = [...config.buckets].sort((a, b) => a - b));
    this.all = new LabelSets(config.labelNames, () => new HistogramSeries(bounds));
    // The registry takes any metric with get(); its type names only prom-client's own classes.
    for (const r of config.registers) r.registerMetric(this as unknown as Metric);
  }

  series(labels: Labels<L>): HistogramSeries {
    return this.all.of(labels);
  }

  observe(labels: Labels<L>, value: number): void {
    this.series(labels).observe(value);
  }

  reset(): void {
    this.all.clear();
  }

  /** What the registry renders (and a Node cluster aggregates), in prom-client's shape. */
  get(): Promise<{ name: string; help: string; type: 'histogram'; aggregator: 'sum'; values: Sample[] }> {
    const values: Sample[] = [];
    for (const { labels, series } of this.all.values()) {
      const cumulative = series.cumulative();
      this.bounds.forEach((le, i) => values.push({ metricName: `${this.name}_bucket`, labels: { le, ...labels }, value: cumulative[i] as number }));
      values.push({ metricName: `${this.name}_bucket`, labels: { le: '+Inf', ...labels }, value: series.count });
      values.push({ metricName: `${this.name}_sum`, labels, value: series.sum });
      values.push({ metricName: `${this.name}_count`, labels, value: series.count });
    }
    return Promise.resolve({ name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values });
  }
}
