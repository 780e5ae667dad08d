import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { z } from 'zod';
import { parseDuration, scaleScenarios, type Scale, type ScenarioFile } from './scenario-scale';

export const scenariosDir = resolve(__dirname, '../scenarios');

const duration = z.string().refine((d) => {
  try {
    parseDuration(d);
    return true;
  } catch {
    return false;
  }
}, 'a k6 duration such as 30s, 1m, 1500ms');
const count = z.number().int().min(0).max(100_000);
const base = {
  exec: z.enum(['lifecycle', 'abuser']).optional(),
  gracefulStop: duration.optional(),
  startTime: duration.optional(),
  env: z.record(z.string(), z.string()).optional(),
  tags: z.record(z.string(), z.string()).optional(),
};
const scenario = z.discriminatedUnion('executor', [
  z.strictObject({ ...base, executor: z.literal('constant-vus'), vus: count, duration }),
  z.strictObject({
    ...base,
    executor: z.literal('ramping-vus'),
    startVUs: count.optional(),
    stages: z.array(z.strictObject({ duration, target: count })).min(1),
    gracefulRampDown: duration.optional(),
  }),
  z.strictObject({
    ...base,
    executor: z.literal('constant-arrival-rate'),
    rate: z.number().positive().max(100_000),
    timeUnit: duration.optional(),
    duration,
    preAllocatedVUs: count,
    maxVUs: count.optional(),
  }),
]);
const file = z.strictObject({
  name: z.string().min(1),
  title: z.string(),
  description: z.string(),
  seedBefore: z.string(),
  scenarios: z.record(z.string(), scenario).refine((s) => Object.keys(s).length > 0, 'at least one scenario'),
});

/** Reads and validates a scenario file: a name from loadtest/scenarios (`s1`) or a path. */
export function loadScenarioFile(nameOrPath: string): ScenarioFile {
  const path = existsSync(nameOrPath) ? nameOrPath : join(scenariosDir, `${nameOrPath}.json`);
  if (!existsSync(path)) throw new Error(`no scenario ${JSON.stringify(nameOrPath)} (looked for ${path})`);
  const parsed = file.safeParse(JSON.parse(readFileSync(path, 'utf8')));
  if (!parsed.success) throw new Error(`${path}: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`);
  return parsed.data as ScenarioFile;
}

export function scaledScenarioFile(f: ScenarioFile, scale: Scale): ScenarioFile {
  return { ...f, scenarios: scaleScenarios(f.scenarios, scale) };
}
