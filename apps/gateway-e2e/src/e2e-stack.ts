import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { Stack, type StackOptions } from '@traffic-dam/stack';

/** The whole stack for one e2e file: nginx, N gateways, Redis and the Python worker, on free ports. */
export async function startE2eStack(opts: Partial<StackOptions> = {}): Promise<Stack> {
  const stack = new Stack({
    dir: mkdtempSync(join(tmpdir(), 'td-e2e-')),
    gateways: 2,
    workers: 1,
    port: 0,
    env: { LOG_LEVEL: 'info', ...opts.env },
    ...opts,
  });
  await stack.start();
  return stack;
}

/** The value of the first series whose line starts with `series` (a name, or a name and labels: `m{type="x"`). */
export async function metricValue(url: string, series: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const heads = series.includes('{') ? [series] : [`${series}{`, `${series} `];
  const line = text.split('\n').find((l) => heads.some((h) => l.startsWith(h)));
  const name = series;
  if (!line) throw new Error(`metric ${name} not found at ${url}`);
  return Number(line.slice(line.lastIndexOf(' ') + 1));
}

/** The worker's admin token in the e2e stacks that inject faults (pass it as WORKER_ADMIN_TOKEN). */
export const E2E_ADMIN_TOKEN = 'e2e-admin-token-0123456789';

/** Sets the worker's fault injection through its admin endpoint. */
export async function setFaults(workerUrl: string, faults: Record<string, unknown>): Promise<void> {
  const res = await fetch(`${workerUrl}/admin/faults`, {
    method: 'PUT',
    headers: { Authorization: `Bearer ${E2E_ADMIN_TOKEN}`, 'Content-Type': 'application/json' },
    body: JSON.stringify(faults),
  });
  if (res.status !== 200) throw new Error(`faults: ${res.status} ${await res.text()}`);
}

/**
 * Every reply the workers publish to any gateway, as it goes out: single replies on
 * `td:replies:*` and the entries of batches on `td:reply-batches:*`, in order. Resolves once
 * subscribed; disconnect the returned client when done.
 */
export async function watchReplies(redisUrl: string, onReply: (reply: { type: string; messageId: string; seq?: number }) => void): Promise<Redis> {
  const sub = new Redis(redisUrl);
  sub.on('pmessage', (_p: string, _c: string, payload: string) => {
    const m = JSON.parse(payload) as { type: string; messageId: string; replies?: Array<{ type: string; messageId: string }> };
    if (m.type === 'batch') for (const r of m.replies ?? []) onReply(r);
    else onReply(m);
  });
  await sub.psubscribe('td:replies:*', 'td:reply-batches:*');
  return sub;
}
