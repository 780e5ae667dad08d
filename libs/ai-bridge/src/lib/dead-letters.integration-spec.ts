import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { fillRedisMemory, freeRedisMemory, startTestRedis, type RedisHandle } from '@traffic-dam/stack';
import { DeadLetterQueue } from './dead-letters';
import { questionToFields, type Question } from './protocol';

describe('dead letters when Redis is at its memory limit (real Redis)', () => {
  let redis: RedisHandle;
  let commands: Redis;

  beforeAll(async () => {
    redis = await startTestRedis(mkdtempSync(join(tmpdir(), 'td-dlq-oom-')));
    commands = new Redis(redis.url);
  });

  afterAll(async () => {
    commands.disconnect();
    await redis.stop();
  });

  it('are still written: the only record of an accepted question that got no answer', async () => {
    const since = Date.now() - 1;
    const q: Question = { id: 'm-oom', sessionId: 's-oom', replyTo: 'td:replies:gw', question: 'cut while full', deadline: Date.now() + 30_000, attempt: 1, traceId: 't' };
    await commands.xadd('td:questions', '*', ...questionToFields(q));
    const dlq = new DeadLetterQueue({ redis: commands });
    await fillRedisMemory(commands);
    try {
      await expect(commands.xadd('td:questions', '*', 'id', 'refused')).rejects.toThrow(/^OOM command not allowed/);
      const written = await dlq.deadLetterByIds(new Map([['m-oom', 2]]), 'draining', 'the gateway shut down', since, 'gw');
      expect(written).toEqual(['m-oom']);
      expect((await dlq.list()).map((d) => ({ id: d.question.id, reason: d.reason, tokensSent: d.tokensSent }))).toEqual([
        { id: 'm-oom', reason: 'draining', tokensSent: 2 },
      ]);
    } finally {
      await freeRedisMemory(commands);
    }
  });
});
