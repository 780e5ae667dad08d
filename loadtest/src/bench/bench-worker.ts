/**
 * The benchmark's AI worker: speaks the worker side of the Redis protocol (DESIGN.md) with no
 * model behind it, so what is measured is the gateway, not an LLM. A child process of the
 * benchmark, so its CPU is its own.
 *
 *   BENCH_WORKER_MODE=answer  reads questions (consumer group `workers`) and answers each with
 *                             BENCH_TOKENS tokens at BENCH_TOKENS_PER_SEC, then `done`. Each token's
 *                             text is "<due> <sent>": epoch ms (3 decimals) when it was scheduled and
 *                             when it was handed to Redis, so the client can tell what the path
 *                             after the worker added. BENCH_TOKENS=0: `done` at once.
 *   BENCH_WORKER_MODE=silent  only heartbeats (declaring BENCH_CAPACITY answers/s) and never reads:
 *                             the queue grows, so the gateway's AI gate must refuse (503 ai_overloaded).
 *
 * Replies go out as the Python worker sends them (apps/ai-worker/ai_worker/replies.py): per reply
 * channel, what is due within BENCH_BATCH_MS (default 10, the worker's WORKER_REPLY_BATCH_MS) is one
 * ReplyBatch on td:reply-batches:<instanceId>, a done flushes its channel at once, a lone reply goes
 * singly on replyTo. BENCH_BATCH_MS=0: every reply singly on replyTo (the previous protocol).
 *
 * Env: REDIS_URL, BENCH_WORKER_ID (bench), BENCH_STREAM (td:questions), BENCH_CAPACITY (100000).
 * Prints one JSON line of counters on SIGTERM, then exits.
 */
import { Redis } from 'ioredis';

const env = process.env;
const mode = env['BENCH_WORKER_MODE'] === 'silent' ? 'silent' : 'answer';
const workerId = env['BENCH_WORKER_ID'] ?? 'bench';
const stream = env['BENCH_STREAM'] ?? 'td:questions';
const capacity = Number(env['BENCH_CAPACITY'] ?? 100_000);
const tokensPerAnswer = Math.max(0, Math.floor(Number(env['BENCH_TOKENS'] ?? 0)));
const intervalMs = 1_000 / Math.max(0.001, Number(env['BENCH_TOKENS_PER_SEC'] ?? 50));
const batchMs = Math.max(0, Number(env['BENCH_BATCH_MS'] ?? 10));

const now = (): number => performance.timeOrigin + performance.now();

interface Answer {
  entryId: string;
  messageId: string;
  sessionId: string;
  channel: string;
  startedAt: number;
  next: number;
}

/** Replies due on one reply channel and not yet published: the tokens' texts are written at the flush. */
interface Outbox {
  channel: string;
  batchChannel: string;
  firstAt: number;
  replies: Array<Record<string, unknown> & { due?: number }>;
  urgent: boolean;
}
const outboxes = new Map<string, Outbox>();

const reader = new Redis(env['REDIS_URL'] ?? 'redis://127.0.0.1:6379', { maxRetriesPerRequest: null });
const writer = new Redis(env['REDIS_URL'] ?? 'redis://127.0.0.1:6379', { maxRetriesPerRequest: null });
const active: Answer[] = [];
const completions: number[] = [];
const counters = { questions: 0, tokens: 0, done: 0, messages: 0, lateMsMax: 0 };
let running = true;

async function heartbeat(): Promise<void> {
  const t = Date.now();
  while (completions.length > 0 && (completions[0] ?? 0) < t - 5_000) completions.shift();
  const value = {
    workerId,
    capacityPerSec: capacity,
    throughputPerSec: mode === 'silent' ? 0 : completions.length / 5,
    inFlight: active.length,
    answering: active.length,
    ts: t,
  };
  await writer.set(`td:workers:${workerId}`, JSON.stringify(value), 'PX', 3_000);
}

function outbox(channel: string): Outbox {
  let o = outboxes.get(channel);
  if (!o) {
    o = { channel, batchChannel: channel.replace(/^td:replies:/, 'td:reply-batches:'), firstAt: 0, replies: [], urgent: false };
    outboxes.set(channel, o);
  }
  if (o.replies.length === 0) o.firstAt = now();
  return o;
}

/** One pass over the answers in progress: every token that is due goes to its channel's outbox. */
function collectDue(t: number): void {
  for (let i = active.length - 1; i >= 0; i--) {
    const a = active[i] as Answer;
    while (a.next < tokensPerAnswer) {
      const due = a.startedAt + a.next * intervalMs;
      if (due > t) break;
      counters.lateMsMax = Math.max(counters.lateMsMax, t - due);
      outbox(a.channel).replies.push({ type: 'token', messageId: a.messageId, sessionId: a.sessionId, seq: a.next, due });
      a.next++;
      counters.tokens++;
    }
    if (a.next >= tokensPerAnswer) {
      const o = outbox(a.channel);
      o.replies.push({ type: 'done', messageId: a.messageId, sessionId: a.sessionId, tokens: tokensPerAnswer });
      o.urgent = true;
      acks.push(a.entryId);
      active.splice(i, 1);
      completions.push(Date.now());
      counters.done++;
    }
  }
}

const acks: string[] = [];

/**
 * Publishes the outboxes whose window ended (or that hold a done), with the acks, in one
 * pipeline. Both servers benchmarked read the batch channel, so no single-message fallback here.
 */
function publishDue(): void {
  const t = now();
  if (active.length > 0) collectDue(t);
  const pipe = writer.pipeline();
  let n = 0;
  const sentAt = t.toFixed(3);
  for (const o of outboxes.values()) {
    if (o.replies.length === 0 || (!o.urgent && t - o.firstAt < batchMs)) continue;
    const replies = o.replies.map(({ due, ...r }) => (due === undefined ? r : { ...r, text: `${due.toFixed(3)} ${sentAt}` }));
    o.replies = [];
    o.urgent = false;
    if (batchMs === 0 || replies.length === 1) {
      for (const r of replies) pipe.publish(o.channel, JSON.stringify(r));
      n += replies.length;
    } else {
      pipe.publish(o.batchChannel, JSON.stringify({ type: 'batch', replies }));
      n++;
    }
  }
  for (const id of acks.splice(0)) pipe.xack(stream, 'workers', id);
  if (n === 0 && pipe.length === 0) return;
  counters.messages += n;
  void pipe.exec().catch(() => undefined);
}

async function readLoop(): Promise<void> {
  while (running) {
    let res: unknown;
    try {
      res = await reader.xreadgroup('GROUP', 'workers', workerId, 'COUNT', 1000, 'BLOCK', 200, 'STREAMS', stream, '>');
    } catch {
      if (!running) return;
      continue;
    }
    for (const [, entries] of (res ?? []) as Array<[string, Array<[string, string[]]>]>) {
      for (const [entryId, flat] of entries) {
        const q: Record<string, string> = {};
        for (let i = 0; i < flat.length; i += 2) q[flat[i] as string] = flat[i + 1] as string;
        counters.questions++;
        active.push({ entryId, messageId: q['id'] ?? '', sessionId: q['sessionId'] ?? '', channel: q['replyTo'] ?? '', startedAt: now(), next: 0 });
      }
    }
    publishDue();
  }
}

async function main(): Promise<void> {
  // The consumer group exists in both modes: the gateway's gate counts the line through it.
  await writer.xgroup('CREATE', stream, 'workers', '$', 'MKSTREAM').catch(() => undefined);
  await heartbeat();
  const beat = setInterval(() => void heartbeat().catch(() => undefined), 1_000);
  // Tokens are published on a 1 ms timer (a batch per pass), not a timer per token.
  const pacer = mode === 'answer' ? setInterval(publishDue, 1) : undefined;
  const loop = mode === 'answer' ? readLoop() : Promise.resolve();
  process.stdout.write(`${JSON.stringify({ ready: true, mode, workerId })}\n`);
  const stop = async (): Promise<void> => {
    running = false;
    clearInterval(beat);
    if (pacer) clearInterval(pacer);
    reader.disconnect();
    await loop.catch(() => undefined);
    await writer.del(`td:workers:${workerId}`).catch(() => undefined);
    writer.disconnect();
    process.stdout.write(`${JSON.stringify({ stopped: true, ...counters })}\n`);
    process.exit(0);
  };
  process.once('SIGTERM', () => void stop());
  process.once('SIGINT', () => void stop());
}

main().catch((err: unknown) => {
  process.stderr.write(`bench worker: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
