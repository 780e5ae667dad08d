import { ClientProxy, type ReadPacket, type WritePacket } from '@nestjs/microservices';
import type { AiBridgeClient, AskGate, AskResult } from './ai-bridge.client';
import type { Question, Reply } from './protocol';

/** The message patterns the transport understands. */
export const AI_PATTERNS = {
  /** send: enqueue (through the gate when one is given); one AskResult, then complete. */
  enqueue: 'chat.enqueue',
  /** send: the replies to one question, until done or error; unsubscribing cancels it. */
  answer: 'chat.answer',
  /** send: enqueue, then the answer; only for questions whose replies come to this instance. */
  ask: 'chat.ask',
  /** emit: mark a question cancelled. */
  cancel: 'chat.cancel',
} as const;

export interface EnqueueRequest {
  question: Question;
  /** Without a gate the question is queued however deep the queue is (the "before" server). */
  gate?: AskGate;
}

export interface AnswerRequest {
  messageId: string;
  /** No done or error within this many ms ends the observable with AnswerTimeoutError. */
  timeoutMs: number;
}

export interface AskRequest extends EnqueueRequest, Pick<AnswerRequest, 'timeoutMs'> {}

export interface CancelEvent {
  messageId: string;
}

export class AnswerTimeoutError extends Error {}
export class AiOverloadedError extends Error {}
export class UnknownPatternError extends Error {}

/**
 * Decides about a reply nobody is watching (its question was asked on another instance and the word
 * has not come yet, or the client is gone): true keeps it for a watcher about to subscribe, false
 * drops it and cancels the question if it is still generating.
 */
export type UnclaimedReplyHandler = (reply: Reply) => boolean;

export interface AiBridgeTransportOptions {
  /** How long a kept reply waits for its watcher, in ms. Default 5,000. */
  keepMs?: number;
  /** Most replies kept at once; beyond that the oldest question's are dropped. Default 10,000. */
  maxKept?: number;
}

interface Kept {
  replies: Reply[];
  at: number;
}

/**
 * The AI bridge as a @nestjs/microservices client: questions go onto the Redis Stream, replies come
 * on this instance's Pub/Sub channel and are handed to the observable watching that question.
 */
export class AiBridgeTransport extends ClientProxy {
  private readonly watchers = new Map<string, (reply: Reply) => void>();
  private readonly kept = new Map<string, Kept>();
  private connecting: Promise<void> | null = null;
  private readonly keepMs: number;
  private readonly maxKept: number;
  private keptCount = 0;
  private unclaimed: UnclaimedReplyHandler = () => false;

  constructor(
    private readonly bridge: AiBridgeClient,
    opts: AiBridgeTransportOptions = {},
  ) {
    super();
    this.keepMs = opts.keepMs ?? 5_000;
    this.maxKept = opts.maxKept ?? 10_000;
  }

  /** Subscribes to the reply channel once; every send and emit awaits it. */
  connect(): Promise<void> {
    this.connecting ??= (async () => {
      this.bridge.onReply((r) => this.route(r));
      await this.bridge.start();
    })();
    return this.connecting;
  }

  async close(): Promise<void> {
    this.watchers.clear();
    this.kept.clear();
    this.keptCount = 0;
    await this.bridge.stop();
    this.connecting = null;
  }

  /** Set once by the owner of the streams, which the transport cannot know about. */
  handleUnclaimed(handler: UnclaimedReplyHandler): void {
    this.unclaimed = handler;
  }

  unwrap<T>(): T {
    return this.bridge as T;
  }

  /** Questions being watched on this instance. */
  get watching(): number {
    return this.watchers.size;
  }

  protected publish(packet: ReadPacket, callback: (packet: WritePacket) => void): () => void {
    switch (packet.pattern) {
      case AI_PATTERNS.enqueue: {
        const req = packet.data as EnqueueRequest;
        this.enqueue(req).then(
          (r) => callback({ response: r, isDisposed: true }),
          (err: unknown) => callback({ err }),
        );
        return () => undefined;
      }
      case AI_PATTERNS.answer: {
        const req = packet.data as AnswerRequest;
        return this.watch(req.messageId, req.timeoutMs, callback);
      }
      case AI_PATTERNS.ask: {
        const req = packet.data as AskRequest;
        if (req.question.replyTo !== this.bridge.replyChannel) {
          callback({ err: new UnknownPatternError(`chat.ask needs replies on ${this.bridge.replyChannel}`) });
          return () => undefined;
        }
        // Watch first: a fast worker may answer before the enqueue call returns.
        const unwatch = this.watch(req.question.id, req.timeoutMs, callback);
        this.enqueue(req).then(
          (r) => {
            if (r.status === 'overloaded') {
              unwatch();
              callback({ err: new AiOverloadedError(`estimated wait ${r.waitMs} ms`) });
            }
          },
          (err: unknown) => {
            unwatch();
            callback({ err });
          },
        );
        return unwatch;
      }
      default:
        callback({ err: new UnknownPatternError(`no handler for pattern ${String(packet.pattern)}`) });
        return () => undefined;
    }
  }

  protected async dispatchEvent<T = unknown>(packet: ReadPacket): Promise<T> {
    if (packet.pattern !== AI_PATTERNS.cancel) throw new UnknownPatternError(`no event ${String(packet.pattern)}`);
    await this.bridge.cancel((packet.data as CancelEvent).messageId);
    return undefined as T;
  }

  private enqueue(req: EnqueueRequest): Promise<AskResult> {
    if (req.gate) return this.bridge.askGated(req.question, req.gate);
    return this.bridge.ask(req.question).then((entryId) => ({ status: 'queued', entryId, waitMs: 0, depth: 0 }));
  }

  /** Hands every reply for messageId to callback until done/error; the returned teardown cancels. */
  private watch(messageId: string, timeoutMs: number, callback: (packet: WritePacket) => void): () => void {
    let finished = false;
    const finish = () => {
      finished = true;
      clearTimeout(timer);
      if (this.watchers.get(messageId) === deliver) this.watchers.delete(messageId);
    };
    const deliver = (r: Reply) => {
      if (finished) return;
      if (r.type === 'token') {
        callback({ response: r });
        return;
      }
      finish();
      callback({ response: r, isDisposed: true });
    };
    const timer = setTimeout(() => {
      if (finished) return;
      finish();
      callback({ err: new AnswerTimeoutError(`no answer to ${messageId} within ${timeoutMs} ms`) });
    }, Math.max(0, timeoutMs));
    timer.unref();
    this.watchers.set(messageId, deliver);
    const early = this.kept.get(messageId);
    if (early) {
      this.kept.delete(messageId);
      this.keptCount -= early.replies.length;
      for (const r of early.replies) deliver(r);
    }
    return () => {
      if (finished) return;
      finish();
      // Unsubscribed before the answer ended: the client is gone, the worker stops.
      void this.bridge.cancel(messageId).catch(() => undefined);
    };
  }

  private route(reply: Reply): void {
    const watcher = this.watchers.get(reply.messageId);
    if (watcher) {
      watcher(reply);
      return;
    }
    const keep = this.unclaimed(reply);
    // A watcher may have subscribed synchronously inside onUnclaimed.
    const adopted = this.watchers.get(reply.messageId);
    if (adopted) {
      adopted(reply);
      return;
    }
    if (!keep) {
      if (reply.type === 'token') void this.bridge.cancel(reply.messageId).catch(() => undefined);
      return;
    }
    this.keep(reply);
  }

  private keep(reply: Reply): void {
    const now = Date.now();
    for (const [id, k] of this.kept) {
      if (now - k.at <= this.keepMs && this.keptCount < this.maxKept) break;
      // Oldest first (Map order): expired, or room is needed.
      this.kept.delete(id);
      this.keptCount -= k.replies.length;
    }
    const k = this.kept.get(reply.messageId) ?? { replies: [], at: now };
    k.replies.push(reply);
    this.kept.set(reply.messageId, k);
    this.keptCount++;
  }
}
