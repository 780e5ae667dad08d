import type { Redis } from 'ioredis';

const FILL_PREFIX = 'td:test:fill:';

async function usedMemory(admin: Redis): Promise<number> {
  return Number(/^used_memory:(\d+)/m.exec(await admin.info('memory'))?.[1]);
}

/**
 * Puts Redis at its memory limit on purpose (the seed's "Redis memory limit" load point): a small
 * maxmemory with noeviction, filled with junk keys until a write is refused, then the limit set
 * under what it holds, so that every write needing memory fails "OOM command not allowed" (reads,
 * deletes, XACK and Pub/Sub still work) until {@link freeRedisMemory}.
 */
export async function fillRedisMemory(admin: Redis, headroomBytes = 2 * 1024 * 1024): Promise<void> {
  await admin.config('SET', 'maxmemory-policy', 'noeviction');
  await admin.config('SET', 'maxmemory', String((await usedMemory(admin)) + headroomBytes));
  const junk = 'x'.repeat(10_000);
  for (let i = 0; ; i++) {
    const p = admin.pipeline();
    for (let j = 0; j < 50; j++) p.set(`${FILL_PREFIX}${i}:${j}`, junk);
    const replies = (await p.exec()) ?? [];
    if (replies.some(([err]) => err?.message.startsWith('OOM'))) break;
    if (i > 100_000) throw new Error('Redis never reached its memory limit');
  }
  // Under what it holds: Redis's own buffers going up and down cannot let a write slip through.
  await admin.config('SET', 'maxmemory', String((await usedMemory(admin)) - 256 * 1024));
}

/** Deletes the junk of {@link fillRedisMemory}: Redis takes writes again (the limit stays). */
export async function freeRedisMemory(admin: Redis): Promise<void> {
  let cursor = '0';
  do {
    const [next, keys] = await admin.scan(cursor, 'MATCH', `${FILL_PREFIX}*`, 'COUNT', 1_000);
    if (keys.length > 0) await admin.unlink(...keys);
    cursor = next;
  } while (cursor !== '0');
}
