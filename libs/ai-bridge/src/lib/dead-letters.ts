import type { Redis } from 'ioredis';
import { questionToFields, type Question } from './protocol';

export type DeadLetterReason = 'deadline_exceeded' | 'worker_error';

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
  if (reason !== 'deadline_exceeded' && reason !== 'worker_error') return null;
  const num = (k: string) => Number(f[k] ?? NaN);
  if (!f['id'] || !f['sessionId'] || !f['replyTo'] || !Number.isFinite(num('deadline'))) return null;
  return {
    entryId,
    reason,
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

/** Lists, inspects, replays (under a retry budget) and purges the dead-letter stream. */
export class DeadLetterQueue {
  private readonly stream: string;
  private readonly questions: string;

  constructor(private readonly o: DeadLetterOptions) {
    this.stream = o.stream ?? 'td:dlq';
    this.questions = o.questionStream ?? 'td:questions';
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
      await this.o.redis.multi().xadd(this.questions, '*', ...questionToFields(q)).xdel(this.stream, d.entryId).exec();
      report.replayed++;
    }
    return report;
  }

  /** Deletes every dead letter; returns how many. */
  async purge(): Promise<number> {
    const n = await this.size();
    await this.o.redis.del(this.stream);
    return n;
  }
}
