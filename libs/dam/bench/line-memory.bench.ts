/**
 * The waiting line's own memory per waiter: a dam in this process, its one slot taken, N x 5
 * waiters in the line, the heap read after a full GC before and after. No connection is held: this
 * is what a waiter costs the library (its ticket, its promise, its entry), on top of whatever
 * connection the caller keeps open for it. Prints one JSON line.
 *
 *   node --expose-gc --import tsx libs/dam/bench/line-memory.bench.ts <redis url> [waiters, default 5000]
 */
import { Redis } from 'ioredis';
import { Dam } from '../src/index';

const gc = (globalThis as unknown as { gc?: () => void }).gc;

async function heap(): Promise<number> {
  if (!gc) throw new Error('run with node --expose-gc');
  for (let i = 0; i < 3; i++) {
    gc();
    await new Promise((r) => setTimeout(r, 200));
  }
  return process.memoryUsage().heapUsed;
}

async function main(): Promise<void> {
  const [url, raw] = [process.argv[2], process.argv[3]];
  if (!url) throw new Error('usage: line-memory.bench.ts <redis url> [waiters]');
  const n = Number(raw ?? 5_000);
  const conn = new Redis(url, { enableOfflineQueue: false, maxRetriesPerRequest: 0 });
  await new Promise((r) => conn.once('ready', r));
  const dam = new Dam({ redis: conn, instanceId: `line-memory-${process.pid}`, slotsPerInstance: 1, keyPrefix: 'td:line-memory', line: { maxWaiters: 2 * n } });
  await dam.start();
  await dam.admit();
  const before = await heap();
  const queued = await Promise.all(Array.from({ length: n }, () => dam.admit(null, { waitMs: 600_000 })));
  const after = await heap();
  const inLine = queued.filter((q) => !q.admitted && q.reason === 'queued').length;
  process.stdout.write(`${JSON.stringify({ waiters: inLine, heapPerWaiter: Math.round((after - before) / n) })}\n`);
  await dam.stop();
  conn.disconnect();
}

main().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
