import { relative } from 'node:path';
import type * as TestcontainersRedis from '@testcontainers/redis';
import type * as Testcontainers from 'testcontainers';
import type { ContainerRuntimeClient, GenericContainer } from 'testcontainers';

/**
 * testcontainers and its modules, loaded on first use: loading them takes about a second, and
 * only container tests need them. Not `import()`: jest runs these files as CommonJS without
 * --experimental-vm-modules, where a dynamic import throws (and every suite fell back to a
 * local Redis without a word).
 */
export function loadTestcontainers(): typeof Testcontainers {
  return require('testcontainers') as typeof Testcontainers;
}

export function loadRedisModule(): typeof TestcontainersRedis {
  return require('@testcontainers/redis') as typeof TestcontainersRedis;
}

/**
 * Where the tests' Redis comes from (env TEST_REDIS): `container` (testcontainers on the local
 * engine, which CI uses), `local` (a redis-server child process), or `auto` (default): a
 * container when an engine answers, else local.
 */
export type TestRedisMode = 'auto' | 'container' | 'local';

export function testRedisMode(): TestRedisMode {
  const raw = process.env['TEST_REDIS'] ?? 'auto';
  if (raw === '' || raw === 'auto') return 'auto';
  if (raw === 'container' || raw === 'local') return raw;
  throw new Error(`TEST_REDIS must be auto, container or local, got ${JSON.stringify(raw)}`);
}

/** The Redis image: REDIS_IMAGE (scripts/engine.sh passes its Debian build), else the compose file's public default. */
export function redisImage(): string {
  return process.env['REDIS_IMAGE'] || 'redis:7.4-alpine';
}

/**
 * Labels on every container a test starts: `td.test`, and `td.run` when TD_RUN_ID is set, so the
 * trap of `npm test` removes what a crashed test process could not.
 */
export function testLabels(): Record<string, string> {
  const run = process.env['TD_RUN_ID'];
  return { 'td.test': 'true', ...(run ? { 'td.run': run } : {}) };
}

/**
 * The container runtime, checked to be usable for `image` without a pull when the image was
 * named by the local set-up: no registry is reachable there, and a pull would only time out.
 */
export async function containerRuntime(image: string): Promise<ContainerRuntimeClient> {
  const tc = loadTestcontainers();
  let client: ContainerRuntimeClient;
  try {
    client = await tc.getContainerRuntimeClient();
  } catch (err) {
    throw new Error(
      `no container engine answers (DOCKER_HOST=${process.env['DOCKER_HOST'] ?? 'unset'}): ${(err as Error).message.split('\n')[0]}. ` +
        'As root, `npm test` sets one up; or: eval "$(bash scripts/engine.sh up /tmp/td-engine)"',
    );
  }
  if (process.env['REDIS_IMAGE'] && !(await client.image.exists(tc.ImageName.fromString(image)))) {
    throw new Error(`image ${image} is not in the engine's store (nothing is pulled): bash scripts/engine.sh images`);
  }
  return client;
}

/**
 * Publishes every exposed port on 127.0.0.1 only (testcontainers binds all interfaces), so test
 * traffic never leaves the loopback. Call after withExposedPorts, before start.
 */
export function publishOnLoopback(container: GenericContainer): void {
  const host = (container as unknown as { hostConfig: { PortBindings?: Record<string, Array<{ HostIp?: string; HostPort?: string }>> } }).hostConfig;
  for (const bindings of Object.values(host.PortBindings ?? {})) {
    for (const b of bindings) b.HostIp = '127.0.0.1';
  }
}

/** The running test file (jest), relative to the working directory, else undefined. */
function testFile(): string | undefined {
  const state = (globalThis as { expect?: { getState?: () => { testPath?: string } } }).expect?.getState?.();
  return state?.testPath ? relative(process.cwd(), state.testPath) : undefined;
}

/** One line per suite that says which Redis it runs on: the integration tier's proof of its tier. */
export function reportTestRedis(what: string): void {
  process.stdout.write(`[test redis] ${testFile() ?? 'this process'}: ${what}\n`);
}
