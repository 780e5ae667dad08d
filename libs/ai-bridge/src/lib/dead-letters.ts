import type { Redis } from 'ioredis';
import { DEAD_LETTER_LUA } from './dead-letter.script';
import { protocolKeys, questionToFields, type Question } from './protocol';

/**
 * `draining`: a gateway shutting down cut the answer at its in-flight limit (DRAIN_INFLIGHT_MS);
 * `breaker_open`: the breaker opened while the question waited in the queue.
 */
export type DeadLetterReason = 'deadline_exceeded' | 'worker_error' | 'draining' | 'breaker_open';
const REASONS: ReadonlySet<string> = new Set<DeadLetterReason>(['deadline_exceeded', 'worker_error', 'draining', 'breaker_open']);

/** A question that did not get its answer: a `td:dlq` entry (schema DeadLetter). */
export interface DeadLetter {
  entryId: string;
  reason: DeadLetterReason;
  message: string;
  question: Question;
  tokensSent: number;
  failedAt: number;
  by: string;
}

export interface ReplayReport {
  replayed: number;
  skippedExpired: number;
  /** Left in the queue because the retry budget ran out. */
  deferred: number;
}

export interface DeadLetterOptions {
  redis: Redis;
  /** Default `td:dlq`. */
  stream?: string;
  /** Where replayed questions go. Default `td:questions`. */
  questionStream?: string;
}

function toDeadLetter(entryId: string, flat: string[]): DeadLetter | null {
  const f: Record<string, string> = {};
  for (let i = 0; i + 1 < flat.length; i += 2) f[flat[i] as string] = flat[i + 1] as string;
  const reason = f['reason'];
  if (reason === undefined || !REASONS.has(reason)) return null;
  const num = (k: string) => Number(f[k] ?? NaN);
  if (!f['id'] || !f['sessionId'] || !f['replyTo'] || !Number.isFinite(num('deadline'))) return null;
  return {
    entryId,
    reason: reason as DeadLetterReason,
    message: f['message'] ?? '',
    question: {
      id: f['id'],
      sessionId: f['sessionId'],
      replyTo: f['replyTo'],
      question: f['question'] ?? '',
      deadline: num('deadline'),
      attempt: Number.isInteger(num('attempt')) ? num('attempt') : 1,
      traceId: f['traceId'] ?? f['id'],
    },
    tokensSent: Number.isInteger(num('tokensSent')) ? num('tokensSent') : 0,
    failedAt: Number.isFinite(num('failedAt')) ? num('failedAt') : 0,
    by: f['by'] ?? '',
  };
}

interface DeadLetterCommand {
  tdDeadLetter(stream: string, maxLen: number, ...fields: string[]): Promise<string>;
}

/** Lists, inspects, replays (under a retry budget) and purges the dead-letter stream. */
export class DeadLetterQueue {
  private readonly stream: string;
  private readonly questions: string;

  constructor(private readonly o: DeadLetterOptions) {
    this.stream = o.stream ?? 'td:dlq';
    this.questions = o.questionStream ?? 'td:questions';
    o.redis.defineCommand('tdDeadLetter', { numberOfKeys: 1, lua: DEAD_LETTER_LUA });
  }

  async size(): Promise<number> {
    return this.o.redis.xlen(this.stream);
  }

  /** Oldest first. */
  async list(limit = 50): Promise<DeadLetter[]> {
    const entries = (await this.o.redis.xrange(this.stream, '-', '+', 'COUNT', limit)) as Array<[string, string[]]>;
    return entries.map(([id, flat]) => toDeadLetter(id, flat)).filter((d): d is DeadLetter => d !== null);
  }

  async get(entryId: string): Promise<DeadLetter | null> {
    const [hit] = (await this.o.redis.xrange(this.stream, entryId, entryId)) as Array<[string, string[]]>;
    return hit ? toDeadLetter(hit[0], hit[1]) : null;
  }

  /**
   * Puts dead letters back on the question stream, oldest first, with attempt + 1 and their
   * original deadline; expired ones are skipped (and stay for inspection). At most `budget`
   * questions go back in this call: the caller sizes it from the workers' throughput.
   */
  async replay(budget: number, now = Date.now()): Promise<ReplayReport> {
    const report: ReplayReport = { replayed: 0, skippedExpired: 0, deferred: 0 };
    for (const d of await this.list(10_000)) {
      if (d.question.deadline <= now) {
        report.skippedExpired++;
        continue;
      }
      if (report.replayed >= budget) {
        report.deferred++;
        continue;
      }
      const q: Question = { ...d.question, attempt: d.question.attempt + 1 };
      // A cut answer (draining, a closed stream) left a cancel mark that would stop the replay at once.
      await this.o.redis
        .multi()
        .del(protocolKeys.cancel(q.id))
        .xadd(this.questions, '*', ...questionToFields(q))
        .xdel(this.stream, d.entryId)
        .exec();
      report.replayed++;
    }
    return report;
  }

  /**
   * Dead-letters questions that a gateway gave up on (e.g. `draining`): finds each by its message
   * id on the question stream, among entries added since `sinceMs`, and writes it with the reason.
   * Returns the ids written; an id no longer on the stream (trimmed) is left out.
   */
  async deadLetterByIds(
    /** message id -> tokens the client already got */
    ids: ReadonlyMap<string, number>,
    reason: DeadLetterReason,
    message: string,
    sinceMs: number,
    by: string,
    now = Date.now(),
  ): Promise<string[]> {
    const wanted = new Map(ids);
    const written: string[] = [];
    let start = `${Math.max(0, Math.floor(sinceMs))}-0`;
    // The window holds at most the questions of one deadline: bounded, paged, and only on this rare path.
    while (wanted.size > 0) {
      const page = (await this.o.redis.xrange(this.questions, start, '+', 'COUNT', 1_000)) as Array<[string, string[]]>;
      for (const [, flat] of page) {
        const f: Record<string, string> = {};
        for (let i = 0; i + 1 < flat.length; i += 2) f[flat[i] as string] = flat[i + 1] as string;
        const id = f['id'];
        if (id === undefined || !wanted.has(id)) continue;
        const q: Question = {
          id,
          sessionId: f['sessionId'] ?? '',
          replyTo: f['replyTo'] ?? '',
          question: f['question'] ?? '',
          deadline: Number(f['deadline']),
          attempt: Number(f['attempt']) || 1,
          traceId: f['traceId'] ?? id,
        };
        await (this.o.redis as Redis & DeadLetterCommand).tdDeadLetter(this.stream, 100_000,
          'reason', reason, 'message', message, ...questionToFields(q),
          'tokensSent', String(wanted.get(id) ?? 0), 'failedAt', String(now), 'by', by);
        written.push(id);
        wanted.delete(id);
        if (wanted.size === 0) break;
      }
      if (page.length < 1_000) break;
      start = `(${page[page.length - 1]?.[0] ?? '+'}`;
    }
    return written;
  }

  /** Deletes every dead letter; returns how many. */
  async purge(): Promise<number> {
    const n = await this.size();
    await this.o.redis.del(this.stream);
    return n;
  }
}
