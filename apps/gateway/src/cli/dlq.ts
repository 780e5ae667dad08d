// npm run dlq -- list [--limit 50] | show <entryId> | replay [--max N] | purge --yes
// Reads REDIS_URL (default redis://127.0.0.1:6379). Replay puts back at most 10% of what the
// live workers answer per second (and at most --max), skipping questions past their deadline.
import { parseArgs } from 'node:util';
import { Redis } from 'ioredis';
import { DeadLetterQueue, liveWorkers as readLiveWorkers, type DeadLetter } from '@traffic-dam/ai-bridge';
import { ThroughputLearner } from '../ai/throughput';

function line(d: DeadLetter): string {
  const age = Math.round((Date.now() - d.failedAt) / 1000);
  const expired = d.question.deadline <= Date.now() ? ' expired' : '';
  return `${d.entryId}  ${d.reason.padEnd(17)} ${d.question.id}  session ${d.question.sessionId}  attempt ${d.question.attempt}  tokens ${d.tokensSent}  ${age}s ago by ${d.by}${expired}`;
}

async function main(): Promise<number> {
  const { positionals, values } = parseArgs({
    allowPositionals: true,
    options: { limit: { type: 'string', default: '50' }, max: { type: 'string' }, yes: { type: 'boolean', default: false } },
  });
  const [command, arg] = positionals;
  const redis = new Redis(process.env['REDIS_URL'] || 'redis://127.0.0.1:6379', { maxRetriesPerRequest: 1, lazyConnect: true });
  // A wrong password surfaces as an 'error' event; connect() itself only says the connection closed.
  let lastError: Error | undefined;
  redis.on('error', (err: Error) => {
    lastError = err;
  });
  await redis.connect().catch((err: unknown) => {
    redis.disconnect();
    throw lastError ?? err;
  });
  const dlq = new DeadLetterQueue({ redis, questionStream: process.env['AI_QUESTION_STREAM'] || undefined });
  try {
    switch (command) {
      case 'list': {
        const items = await dlq.list(Number(values.limit));
        process.stdout.write(`${await dlq.size()} dead letter(s)\n${items.map(line).join('\n')}${items.length ? '\n' : ''}`);
        return 0;
      }
      case 'show': {
        if (!arg) throw new Error('show needs an entry id');
        const d = await dlq.get(arg);
        if (!d) {
          process.stderr.write(`no dead letter ${arg}\n`);
          return 1;
        }
        process.stdout.write(`${JSON.stringify(d, null, 2)}\n`);
        return 0;
      }
      case 'replay': {
        const workers = await readLiveWorkers(redis);
        const { rate, liveWorkers } = new ThroughputLearner().update(workers, Date.now());
        if (liveWorkers === 0) {
          process.stderr.write('no live worker: nothing replayed\n');
          return 1;
        }
        const budget = Math.min(Math.max(1, Math.floor(rate * 0.1)), values.max ? Number(values.max) : Infinity);
        const r = await dlq.replay(budget);
        process.stdout.write(`replayed ${r.replayed} (budget ${budget}: 10% of ${rate}/s), skipped ${r.skippedExpired} expired, ${r.deferred} left for later\n`);
        return 0;
      }
      case 'purge': {
        if (!values.yes) {
          process.stderr.write('purge deletes every dead letter; run it again with --yes\n');
          return 2;
        }
        process.stdout.write(`purged ${await dlq.purge()} dead letter(s)\n`);
        return 0;
      }
      default:
        process.stderr.write('usage: npm run dlq -- list [--limit N] | show <entryId> | replay [--max N] | purge --yes\n');
        return 2;
    }
  } finally {
    redis.disconnect();
  }
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  },
);
