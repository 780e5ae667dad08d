// The scenario files' shape (k6's `options.scenarios`) and the scaling of a run. Pure code with no
// Node or k6 imports: the k6 scripts import this file as well, so both runners scale the same way.

export interface Stage {
  duration: string;
  target: number;
}

interface ScenarioBase {
  /** The iteration function: `lifecycle` (a user) or `abuser` (fires the lifecycle on a timer). */
  exec?: 'lifecycle' | 'abuser';
  gracefulStop?: string;
  startTime?: string;
  env?: Record<string, string>;
  tags?: Record<string, string>;
}

export interface ConstantVus extends ScenarioBase {
  executor: 'constant-vus';
  vus: number;
  duration: string;
}

export interface RampingVus extends ScenarioBase {
  executor: 'ramping-vus';
  startVUs?: number;
  stages: Stage[];
  gracefulRampDown?: string;
}

export interface ConstantArrivalRate extends ScenarioBase {
  executor: 'constant-arrival-rate';
  rate: number;
  timeUnit?: string;
  duration: string;
  preAllocatedVUs: number;
  maxVUs?: number;
}

export type Scenario = ConstantVus | RampingVus | ConstantArrivalRate;

/** One file of loadtest/scenarios: k6's options.scenarios plus what the report shows about it. */
export interface ScenarioFile {
  name: string;
  title: string;
  description: string;
  /** The seed's "before" result for this scenario, quoted in the report. */
  seedBefore: string;
  scenarios: Record<string, Scenario>;
}

export interface Scale {
  /** Multiplies every duration (stages, durations, graceful stops). 1 = as written. */
  time: number;
  /** Multiplies closed-model VU counts (vus, stage targets). Arrival rates are never scaled. */
  vus: number;
}

const UNIT_MS: Record<string, number> = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000 };

/** k6 durations: "30s", "1m", "2m30s", "1500ms", "1h". */
export function parseDuration(text: string): number {
  const parts = /^(?:\d+(?:\.\d+)?(?:ms|s|m|h))+$/.test(text) ? text.match(/\d+(?:\.\d+)?(?:ms|s|m|h)/g) : null;
  if (!parts) throw new Error(`not a k6 duration: ${JSON.stringify(text)}`);
  let ms = 0;
  for (const p of parts) {
    const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)$/.exec(p);
    if (!m) throw new Error(`not a k6 duration: ${JSON.stringify(text)}`);
    ms += Number(m[1]) * (UNIT_MS[m[2] as string] as number);
  }
  return ms;
}

export function formatDuration(ms: number): string {
  const r = Math.max(0, Math.round(ms));
  return r % 1_000 === 0 ? `${r / 1_000}s` : `${r}ms`;
}

function scaleTime(d: string | undefined, factor: number, minMs: number): string | undefined {
  return d === undefined ? undefined : formatDuration(Math.max(minMs, parseDuration(d) * factor));
}

function scaleCount(n: number, factor: number): number {
  // A scenario that asked for users keeps at least one.
  return n === 0 ? 0 : Math.max(1, Math.round(n * factor));
}

/**
 * The file's scenarios with every duration times `scale.time` and every closed-model VU count
 * times `scale.vus`. Graceful stops keep at least 2 s so an iteration in flight can finish.
 */
export function scaleScenarios(scenarios: Record<string, Scenario>, scale: Scale): Record<string, Scenario> {
  const out: Record<string, Scenario> = {};
  for (const [name, s] of Object.entries(scenarios)) {
    const common = {
      gracefulStop: scaleTime(s.gracefulStop, scale.time, 2_000),
      startTime: scaleTime(s.startTime, scale.time, 0),
    };
    switch (s.executor) {
      case 'constant-vus':
        out[name] = { ...s, ...common, vus: scaleCount(s.vus, scale.vus), duration: scaleTime(s.duration, scale.time, 1_000) as string };
        break;
      case 'ramping-vus':
        out[name] = {
          ...s,
          ...common,
          startVUs: s.startVUs === undefined ? undefined : scaleCount(s.startVUs, scale.vus),
          gracefulRampDown: scaleTime(s.gracefulRampDown, scale.time, 2_000),
          stages: s.stages.map((st) => ({ duration: scaleTime(st.duration, scale.time, 500) as string, target: scaleCount(st.target, scale.vus) })),
        };
        break;
      case 'constant-arrival-rate':
        out[name] = { ...s, ...common, duration: scaleTime(s.duration, scale.time, 1_000) as string };
        break;
    }
    // k6 refuses keys set to undefined in some versions; drop them.
    const o = out[name] as unknown as Record<string, unknown>;
    for (const k of Object.keys(o)) if (o[k] === undefined) delete o[k];
  }
  return out;
}

/** How long a scenario runs before its graceful stop, in ms. */
export function scenarioDurationMs(s: Scenario): number {
  const start = s.startTime ? parseDuration(s.startTime) : 0;
  switch (s.executor) {
    case 'constant-vus':
    case 'constant-arrival-rate':
      return start + parseDuration(s.duration);
    case 'ramping-vus':
      return start + s.stages.reduce((t, st) => t + parseDuration(st.duration), 0);
  }
}

/** The most VUs a scenario asks for at once (for sizing connection pools). */
export function scenarioMaxVus(s: Scenario): number {
  switch (s.executor) {
    case 'constant-vus':
      return s.vus;
    case 'ramping-vus':
      return Math.max(s.startVUs ?? 0, ...s.stages.map((st) => st.target));
    case 'constant-arrival-rate':
      return s.maxVUs ?? s.preAllocatedVUs;
  }
}

/** Closed-model VUs a ramping scenario wants at `ms` after its start (k6's linear interpolation). */
export function rampTarget(s: RampingVus, ms: number): number {
  let from = s.startVUs ?? 0;
  let t = 0;
  for (const st of s.stages) {
    const d = parseDuration(st.duration);
    if (ms < t + d) return Math.round(from + ((st.target - from) * (ms - t)) / d);
    t += d;
    from = st.target;
  }
  return from;
}
