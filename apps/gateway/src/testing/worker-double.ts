import { Redis } from 'ioredis';

/**
 * Speaks the worker's side of the protocol for gateway integration tests, where the gateway
 * is under test and the Python worker is not (the e2e tier runs the real one).
 * Answers every question with three tokens and done; `holdNext` parks the next answer.
 */
export class WorkerDouble {
  readonly received: Array<Record<string, string>> = [];
  holdNext = false;
  private readonly reader: Redis;
  private readonly writer: Redis;
  private running = false;
  private loop: Promise<void> = Promise.resolve();
  private held: Array<() => void> = [];
  private heartbeat: NodeJS.Timeout | undefined;

  constructor(url: string, private readonly stream = 'td:questions') {
    this.reader = new Redis(url);
    this.writer = new Redis(url);
  }

  async start(): Promise<void> {
    await this.writer.xgroup('CREATE', this.stream, 'workers', '$', 'MKSTREAM').catch(() => undefined);
    // Alive for the gateway's AI gate, like a real worker's heartbeat.
    const beat = () =>
      this.writer.set(
        'td:workers:double',
        JSON.stringify({ workerId: 'double', capacityPerSec: 100, throughputPerSec: 0, inFlight: 0, answering: 0, ts: Date.now() }),
        'PX',
        3_000,
      );
    await beat();
    this.heartbeat = setInterval(() => void beat().catch(() => undefined), 1_000);
    this.running = true;
    this.loop = this.run();
  }

  release(): void {
    const h = this.held;
    this.held = [];
    for (const f of h) f();
  }

  async stop(): Promise<void> {
    clearInterval(this.heartbeat);
    this.running = false;
    this.release();
    this.reader.disconnect();
    await this.loop.catch(() => undefined);
    this.writer.disconnect();
  }

  private async run(): Promise<void> {
    while (this.running) {
      let res: unknown;
      try {
        res = await this.reader.xreadgroup('GROUP', 'workers', 'double', 'COUNT', 10, 'BLOCK', 200, 'STREAMS', this.stream, '>');
      } catch {
        return;
      }
      const batches = (res ?? []) as Array<[string, Array<[string, string[]]>]>;
      for (const [, entries] of batches) {
        for (const [id, flat] of entries) {
          const q: Record<string, string> = {};
          for (let i = 0; i < flat.length; i += 2) q[flat[i] as string] = flat[i + 1] as string;
          this.received.push(q);
          void this.answer(id, q).catch(() => undefined); // stopped mid-answer: nothing to report
        }
      }
    }
  }

  private async answer(entryId: string, q: Record<string, string>): Promise<void> {
    if (this.holdNext) {
      this.holdNext = false;
      await new Promise<void>((r) => this.held.push(r));
    }
    const head = { messageId: q['id'], sessionId: q['sessionId'] };
    const channel = q['replyTo'] as string;
    for (let seq = 0; seq < 3; seq++) {
      await this.writer.publish(channel, JSON.stringify({ type: 'token', ...head, seq, text: `t${seq} ` }));
    }
    await this.writer.publish(channel, JSON.stringify({ type: 'done', ...head, tokens: 3 }));
    await this.writer.xack(this.stream, 'workers', entryId);
  }
}
