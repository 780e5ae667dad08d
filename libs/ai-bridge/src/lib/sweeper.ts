import type { ChainableCommander, Redis } from 'ioredis';
import type { DeadLetterReason } from './dead-letters';
import { questionToFields, type Question, type ReplyErrorCode } from './protocol';

export interface SweeperOptions {
  redis: Redis;
  /** Consumer name the sweeper claims entries under before re-queueing them. Default `sweeper`. */
  consumer?: string;
  questionStream?: string;
  group?: string;
  dlqStream?: string;
  /** Only entries idle this long (ms since delivery) are looked at. Default 3,000 (a heartbeat TTL). */
  minIdleMs?: number;
  /** Who sweeps, written into dead letters. */
  by: string;
}

export interface SweepReport {
  requeued: number;
  deadLettered: number;
}

/** Consumer that takes queued questions off the group when the breaker sheds them. */
const SHED_CONSUMER = 'breaker-shed';
/** Most questions shed in one call; the next call takes the rest. */
const SHED_BATCH = 500;

function fieldsOf(flat: string[] | null): Record<string, string> | null {
  if (!flat) return null;
  const f: Record<string, string> = {};
  for (let i = 0; i + 1 < flat.length; i += 2) f[flat[i] as string] = flat[i + 1] as string;
  return f;
}

/**
 * Questions held by a worker that died and did not come back: put back on the stream for a live
 * worker while their deadline allows, else dead-lettered with an error to the client. One
 * instance runs it at a time (the caller holds the lock).
 */
export class QuestionSweeper {
  private readonly stream: string;
  private readonly group: string;
  private readonly consumer: string;
  private readonly dlq: string;
  private readonly minIdleMs: number;

  constructor(private readonly o: SweeperOptions) {
    this.stream = o.questionStream ?? 'td:questions';
    this.group = o.group ?? 'workers';
    this.consumer = o.consumer ?? 'sweeper';
    this.dlq = o.dlqStream ?? 'td:dlq';
    this.minIdleMs = o.minIdleMs ?? 3_000;
  }

  async sweepOnce(isAlive: (consumer: string) => boolean, now = Date.now()): Promise<SweepReport> {
    const report: SweepReport = { requeued: 0, deadLettered: 0 };
    let pending: Array<[string, string, number, number]>;
    try {
      pending = (await this.o.redis.xpending(this.stream, this.group, 'IDLE', this.minIdleMs, '-', '+', 500)) as Array<
        [string, string, number, number]
      >;
    } catch {
      return report; // no stream or group yet
    }
    const orphans = pending.filter(([, consumer]) => consumer !== this.consumer && !isAlive(consumer)).map(([id]) => id);
    if (orphans.length === 0) return report;
    // XCLAIM moves them to us only if still idle long enough: a worker that just came back wins.
    const claimed = (await this.o.redis.xclaim(this.stream, this.group, this.consumer, this.minIdleMs, ...orphans)) as Array<
      [string, string[] | null]
    >;
    for (const [id, flat] of claimed) {
      const f = fieldsOf(flat);
      const deadline = Number(f?.['deadline']);
      const tx = this.o.redis.multi();
      if (f && f['id'] && f['sessionId'] && f['replyTo'] && Number.isFinite(deadline) && deadline > now) {
        const q: Question = {
          id: f['id'],
          sessionId: f['sessionId'],
          replyTo: f['replyTo'],
          question: f['question'] ?? '',
          deadline,
          attempt: (Number(f['attempt']) || 1) + 1,
          traceId: f['traceId'] ?? f['id'],
        };
        tx.xadd(this.stream, '*', ...questionToFields(q));
        report.requeued++;
      } else if (f && f['id'] && f['sessionId'] && f['replyTo']) {
        this.deadLetter(tx, f, {
          reason: 'deadline_exceeded',
          note: 'the worker holding it died and its deadline passed',
          deadline: String(Number.isFinite(deadline) ? deadline : now),
          code: 'deadline_exceeded',
          tellClient: 'The worker answering it died and the deadline passed.',
          now,
        });
        report.deadLettered++;
      }
      tx.xack(this.stream, this.group, id);
      await tx.exec();
    }
    return report;
  }

  /**
   * The breaker opened while these questions waited: none has started, and the worker is failing.
   * Takes every question not yet delivered off the group, dead-letters it (`breaker_open`) and tells
   * its client at once (`ai_unavailable`), instead of letting it wait for a failure or its deadline.
   * Reading them through the group keeps the gate's depth (lag) exact; a crash half-way leaves them
   * pending under a consumer that is never alive, so sweepOnce hands them on.
   */
  async shedQueued(now = Date.now()): Promise<number> {
    let shed = 0;
    for (;;) {
      let res: Array<[string, Array<[string, string[] | null]>]> | null;
      try {
        res = (await this.o.redis.xreadgroup('GROUP', this.group, SHED_CONSUMER, 'COUNT', SHED_BATCH, 'STREAMS', this.stream, '>')) as typeof res;
      } catch {
        return shed; // no stream or group yet
      }
      const entries = res?.[0]?.[1] ?? [];
      if (entries.length === 0) return shed;
      const tx = this.o.redis.multi();
      for (const [id, flat] of entries) {
        const f = fieldsOf(flat);
        if (f && f['id'] && f['sessionId'] && f['replyTo']) {
          this.deadLetter(tx, f, {
            reason: 'breaker_open',
            note: 'the breaker opened while it waited in the queue',
            deadline: f['deadline'] ?? String(now),
            code: 'ai_unavailable',
            tellClient: 'The AI path failed while the question waited; ask again shortly.',
            now,
          });
          shed++;
        }
        tx.xack(this.stream, this.group, id);
      }
      await tx.exec();
      if (entries.length < SHED_BATCH) return shed;
    }
  }

  /**
   * Queues, on tx, a dead letter (schema DeadLetter) for a stream entry and the error its client
   * gets. The caller has checked that id, sessionId and replyTo are present.
   */
  private deadLetter(
    tx: ChainableCommander,
    f: Record<string, string>,
    d: { reason: DeadLetterReason; note: string; deadline: string; code: ReplyErrorCode; tellClient: string; now: number },
  ): void {
    const id = f['id'] as string;
    const sessionId = f['sessionId'] as string;
    const replyTo = f['replyTo'] as string;
    tx.xadd(this.dlq, 'MAXLEN', '~', 100_000, '*',
      'reason', d.reason, 'message', d.note,
      'id', id, 'sessionId', sessionId, 'replyTo', replyTo, 'question', f['question'] ?? '',
      'deadline', d.deadline, 'attempt', f['attempt'] ?? '1',
      'traceId', f['traceId'] ?? id, 'tokensSent', '0', 'failedAt', String(d.now), 'by', this.o.by);
    tx.publish(replyTo, JSON.stringify({ type: 'error', messageId: id, sessionId, code: d.code, message: d.tellClient }));
  }
}
