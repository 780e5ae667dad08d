import type { Redis } from 'ioredis';
import { parseHeartbeat, parseReply, parseReplyBatch, protocolKeys, type Reply, type WorkerHeartbeat } from './protocol';

export type ReplyHandler = (reply: Reply) => void;

/**
 * This instance's reply channels: the workers publish a question's replies singly on the channel
 * it names in replyTo, or batched with the other replies bound for this instance on its batch
 * channel. One subscriber connection reads both, so a question's replies keep their order.
 */
export class ReplyChannel {
  readonly name: string;
  readonly batchName: string;
  private readonly handlers = new Set<ReplyHandler>();
  private invalid = 0;
  private started = false;

  constructor(
    private readonly subscriber: Redis,
    instanceId: string,
  ) {
    this.name = protocolKeys.replyChannel(instanceId);
    this.batchName = protocolKeys.replyBatchChannel(instanceId);
  }

  /** Replies that failed to parse since start; a worker speaking another protocol shows here. */
  get invalidReplyCount(): number {
    return this.invalid;
  }

  /** Subscribes to both channels. Resolves once Redis confirmed the subscriptions. */
  async start(): Promise<void> {
    if (this.started) return;
    this.started = true;
    this.subscriber.on('message', (channel: string, payload: string) => {
      if (channel === this.batchName) {
        const batch = parseReplyBatch(payload);
        this.invalid += batch.invalid;
        for (const reply of batch.replies) this.deliver(reply);
        return;
      }
      if (channel !== this.name) return;
      const reply = parseReply(payload);
      if (reply === null) this.invalid++;
      else this.deliver(reply);
    });
    await this.subscriber.subscribe(this.name, this.batchName);
  }

  private deliver(reply: Reply): void {
    for (const h of this.handlers) h(reply);
  }

  onReply(handler: ReplyHandler): () => void {
    this.handlers.add(handler);
    return () => this.handlers.delete(handler);
  }

  async stop(): Promise<void> {
    if (!this.started) return;
    this.started = false;
    this.handlers.clear();
    await this.subscriber.unsubscribe(this.name, this.batchName);
  }
}

/** Heartbeats of the workers alive now. */
export async function liveWorkers(redis: Redis): Promise<WorkerHeartbeat[]> {
  const keys: string[] = [];
  let cursor = '0';
  do {
    const [next, batch] = await redis.scan(cursor, 'MATCH', protocolKeys.workerHeartbeatPattern, 'COUNT', 100);
    cursor = next;
    keys.push(...batch);
  } while (cursor !== '0');
  if (keys.length === 0) return [];
  const values = await redis.mget(...keys);
  return values.map(parseHeartbeat).filter((h): h is WorkerHeartbeat => h !== null);
}
