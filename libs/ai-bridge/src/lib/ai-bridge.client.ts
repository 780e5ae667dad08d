import type { Redis } from 'ioredis';
import type { Question, Reply, WorkerHeartbeat } from './protocol';
import { GATED_ASK_LUA } from './ask.script';
import { parseHeartbeat, parseReply, protocolKeys, questionToFields } from './protocol';

export interface AiBridgeOptions {
  /** Connection for commands (XADD, SET). */
  commands: Redis;
  /** Connection dedicated to SUBSCRIBE; it cannot run other commands while subscribed. */
  subscriber: Redis;
  /** This gateway instance's id; replies for its sessions arrive on its own channel. */
  instanceId: string;
  /** Stream the workers read questions from. Default `td:questions`. */
  questionStream?: string;
  /** Approximate cap on the stream's length (XADD MAXLEN ~). Default 100,000 entries. */
  questionStreamMaxLen?: number;
  /** How long a cancel mark lives, in ms. Default 60,000. */
  cancelTtlMs?: number;
  /** Consumer group of the workers, whose depth the gate reads. Default `workers`. */
  consumerGroup?: string;
}

export type ReplyHandler = (reply: Reply) => void;

/** The AI-capacity gate: refuse when the estimated wait (queue depth / throughput) exceeds maxWaitMs. */
export interface AskGate {
  maxWaitMs: number;
  /** Measured answers per second of the live workers. */
  throughputPerSec: number;
  /**
   * Answers the workers are streaming (their heartbeats' `answering`): delivered and not yet
   * acknowledged like the questions still waiting for a start, but not ahead of a new one in
   * line, so they are taken off the depth. Default 0.
   */
  answering?: number;
  /**
   * Wait in ms before any answer can start, whatever the line: the rest of a Retry-After the
   * workers honour, the model's time to first token beyond its usual. Added to the line's. Default 0.
   */
  extraWaitMs?: number;
}

export type AskResult =
  | { status: 'queued'; entryId: string; waitMs: number; depth: number }
  | { status: 'overloaded'; waitMs: number; depth: number };

interface GateCommands {
  tdGatedAsk(stream: string, ...args: Array<string | number>): Promise<[string, number, number, string?]>;
}

/** Gateway side of the Redis protocol with the AI worker. No Nest, no env: typed options only. */
export class AiBridgeClient {
  readonly replyChannel: string;
  private readonly stream: string;
  private readonly maxLen: number;
  private readonly cancelTtlMs: number;
  private readonly handlers = new Set<ReplyHandler>();
  private invalidReplies = 0;
  private gateDefined = false;
  private readonly group: string;
  private started = false;

  constructor(private readonly opts: AiBridgeOptions) {
    this.replyChannel = protocolKeys.replyChannel(opts.instanceId);
    this.stream = opts.questionStream ?? 'td:questions';
    this.maxLen = opts.questionStreamMaxLen ?? 100_000;
    this.cancelTtlMs = opts.cancelTtlMs ?? 60_000;
    this.group = opts.consumerGroup ?? 'workers';
  }

  /** Replies that failed to parse since start; a worker speaking another protocol shows here. */
  get invalidReplyCount(): number {
    return this.invalidReplies;
  }

  /** Subscribes to this instance's reply channel. Resolves once Redis confirmed the subscription. */
  async start(): Promise<void> {
    if (this.started) return;
    this.started = true;
    this.opts.subscriber.on('message', (channel: string, payload: string) => {
      if (channel !== this.replyChannel) return;
      const reply = parseReply(payload);
      if (reply === null) {
        this.invalidReplies++;
        return;
      }
      for (const h of this.handlers) h(reply);
    });
    await this.opts.subscriber.subscribe(this.replyChannel);
  }

  onReply(handler: ReplyHandler): () => void {
    this.handlers.add(handler);
    return () => this.handlers.delete(handler);
  }

  /** Puts a question on the stream; resolves with the stream entry id. */
  async ask(question: Question): Promise<string> {
    const id = await this.opts.commands.xadd(
      this.stream,
      'MAXLEN',
      '~',
      String(this.maxLen),
      '*',
      ...questionToFields(question),
    );
    if (id === null) throw new Error('XADD returned no id');
    return id;
  }

  /**
   * Puts a question on the stream only if its estimated wait fits the gate: one atomic script
   * that reads the consumer group's depth and enqueues.
   */
  async askGated(question: Question, gate: AskGate): Promise<AskResult> {
    const redis = this.opts.commands as Redis & GateCommands;
    if (!this.gateDefined) {
      redis.defineCommand('tdGatedAsk', { numberOfKeys: 1, lua: GATED_ASK_LUA });
      this.gateDefined = true;
    }
    const [status, waitMs, depth, entryId] = await redis.tdGatedAsk(
      this.stream,
      this.group,
      Math.max(0, Math.floor(gate.maxWaitMs)),
      Math.max(0, gate.throughputPerSec),
      this.maxLen,
      Math.max(0, Math.floor(gate.answering ?? 0)),
      Math.max(0, Math.floor(gate.extraWaitMs ?? 0)),
      ...questionToFields(question),
    );
    return status === 'ok' ? { status: 'queued', entryId: entryId ?? '', waitMs, depth } : { status: 'overloaded', waitMs, depth };
  }

  /** Marks a question cancelled; the worker checks the mark between tokens. */
  async cancel(messageId: string): Promise<void> {
    await this.opts.commands.set(protocolKeys.cancel(messageId), '1', 'PX', this.cancelTtlMs);
  }

  /** Heartbeats of the workers alive now. */
  async liveWorkers(): Promise<WorkerHeartbeat[]> {
    const keys: string[] = [];
    let cursor = '0';
    do {
      const [next, batch] = await this.opts.commands.scan(
        cursor,
        'MATCH',
        protocolKeys.workerHeartbeatPattern,
        'COUNT',
        100,
      );
      cursor = next;
      keys.push(...batch);
    } while (cursor !== '0');
    if (keys.length === 0) return [];
    const values = await this.opts.commands.mget(...keys);
    return values.map(parseHeartbeat).filter((h): h is WorkerHeartbeat => h !== null);
  }

  async stop(): Promise<void> {
    if (!this.started) return;
    this.started = false;
    this.handlers.clear();
    await this.opts.subscriber.unsubscribe(this.replyChannel);
  }
}
