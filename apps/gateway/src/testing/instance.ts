import type { INestApplication } from '@nestjs/common';
import { createApp } from '../app/create-app';
import { loadConfig } from '../common/config/config';

export interface TestInstance {
  app: INestApplication;
  url: string;
  id: string;
}

/** A whole gateway instance in this process on a free port, configured as from the environment. */
export async function startInstance(redisUrl: string, name: string, env: Record<string, string> = {}): Promise<TestInstance> {
  const config = loadConfig({ REDIS_URL: redisUrl, LOG_LEVEL: 'silent', ...env });
  const id = `${name}-${process.pid}`;
  const app = await createApp(config, id);
  try {
    await app.listen(0, '127.0.0.1');
  } catch (err) {
    // A boot that fails half-way (say NOAUTH) leaves Redis clients reconnecting and timers
    // running: close what started, or the test process never exits.
    await app.close().catch(() => undefined);
    throw err;
  }
  const addr = app.getHttpServer().address() as { port: number };
  return { app, url: `http://127.0.0.1:${addr.port}`, id };
}
