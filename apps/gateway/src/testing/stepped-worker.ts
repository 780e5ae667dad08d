import { Redis } from 'ioredis';
import { waitFor } from '@traffic-dam/stack';

/** One question the stepped worker took, answered only when the test says so. */
export interface SteppedAnswer {
  question: Record<string, string>;
  /** Publishes the next token, unless the question was cancelled (as the real worker checks between tokens); false then. */
  token(): Promise<boolean>;
  done(): Promise<void>;
  /** Tokens published so far. */
  readonly sent: number;
}

/**
 * The worker's side of the protocol, one token at a time at the test's word: for tests of what
 * happens to an answer in progress (a client gone mid-answer, a resume) without any timing.
 */
export class SteppedWorker {
  private readonly reader: Redis;
  private readonly writer: Redis;
  private readonly taken: SteppedAnswer[] = [];
  private running = false;
  private loop: Promise<void> = Promise.resolve();
  private heartbeat: NodeJS.Timeout | undefined;

  constructor(url: string, private readonly stream = 'td:questions') {
    this.reader = new Redis(url);
    this.writer = new Redis(url);
  }

  async start(): Promise<void> {
    await this.writer.xgroup('CREATE', this.stream, 'workers', '$', 'MKSTREAM').catch(() => undefined);
    const beat = () =>
      this.writer.set(
        'td:workers:stepped',
        JSON.stringify({ workerId: 'stepped', capacityPerSec: 100, throughputPerSec: 0, inFlight: 0, answering: 0, ts: Date.now() }),
        'PX',
        3_000,
      );
    await beat();
    this.heartbeat = setInterval(() => void beat().catch(() => undefined), 1_000);
    this.running = true;
    this.loop = this.run();
  }

  /** The n-th question taken (from 0), once it came. */
  async question(n: number, timeoutMs = 5_000): Promise<SteppedAnswer> {
    await waitFor(`question ${n} taken`, () => this.taken.length > n, timeoutMs);
    return this.taken[n] as SteppedAnswer;
  }

  async stop(): Promise<void> {
    clearInterval(this.heartbeat);
    this.running = false;
    this.reader.disconnect();
    await this.loop.catch(() => undefined);
    this.writer.disconnect();
  }

  private async run(): Promise<void> {
    while (this.running) {
      let res: unknown;
      try {
        res = await this.reader.xreadgroup('GROUP', 'workers', 'stepped', 'COUNT', 10, 'BLOCK', 200, 'STREAMS', this.stream, '>');
      } catch {
        return;
      }
      for (const [, entries] of (res ?? []) as Array<[string, Array<[string, string[]]>]>) {
        for (const [id, flat] of entries) {
          const q: Record<string, string> = {};
          for (let i = 0; i < flat.length; i += 2) q[flat[i] as string] = flat[i + 1] as string;
          this.taken.push(this.answerOf(id, q));
        }
      }
    }
  }

  private answerOf(entryId: string, q: Record<string, string>): SteppedAnswer {
    const w = this.writer;
    const head = { messageId: q['id'], sessionId: q['sessionId'] };
    const channel = q['replyTo'] as string;
    let seq = 0;
    return {
      question: q,
      get sent() {
        return seq;
      },
      token: async () => {
        if ((await w.exists(`td:cancel:${q['id']}`)) === 1) {
          await w.xack(this.stream, 'workers', entryId);
          return false;
        }
        await w.publish(channel, JSON.stringify({ type: 'token', ...head, seq, text: `t${seq} ` }));
        seq++;
        return true;
      },
      done: async () => {
        await w.publish(channel, JSON.stringify({ type: 'done', ...head, tokens: seq }));
        await w.xack(this.stream, 'workers', entryId);
      },
    };
  }
}
