import { ClientProxy, type ReadPacket, type WritePacket } from '@nestjs/microservices';
import type { Redis } from 'ioredis';
import { lastValueFrom, type Observable } from 'rxjs';
import { gatedAsk, outcomeKey, settleAsk } from './ask.lua';
import { KeptReplies } from './kept-replies';
import { protocolKeys, questionToFields, type Question, type Reply, type WorkerHeartbeat } from './protocol';
import { ReplyChannel, liveWorkers, type ReplyHandler } from './reply-channel';

/** The message patterns the client understands. */
export const AI_PATTERNS = {
  /** send: enqueue (through the gate when one is given), at most once per message id; one AskResult. */
  enqueue: 'chat.enqueue',
  /** send: the replies to one question, until done or error; unsubscribing cancels it. */
  answer: 'chat.answer',
  /** send: enqueue, then the answer; only for questions whose replies come to this instance. */
  ask: 'chat.ask',
  /** send: the heartbeats of the live workers; one WorkerHeartbeat[]. */
  workers: 'chat.workers',
  /** emit: mark a question cancelled. */
  cancel: 'chat.cancel',
} as const;

/** The AI-capacity gate: refuse when the estimated wait (queue depth / throughput) exceeds maxWaitMs. */
export interface AskGate {
  maxWaitMs: number;
  /** Answers per second the gate counts on. */
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
  /** dequeued: the line's counter of questions that left it, at the gate (-1: unknown; see queueProgress). */
  | { status: 'queued'; entryId: string; waitMs: number; depth: number; dequeued?: number }
  /**
   * waitMs: the gate's estimate (the longer of the line's length / throughput and what its oldest
   * entry measurably waited); rateWaitMs: the first alone, what the line's length proves.
   */
  | { status: 'overloaded'; waitMs: number; depth: number; rateWaitMs: number };

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
/** The enqueue found the question settled as refused first: it was not queued. */
export class QuestionRefusedError extends Error {}
/**
 * Neither the enqueue nor the settle that follows it answered in time: the question counts as
 * refused. Should Redis turn out to have queued it, the client cancels it.
 */
export class EnqueueUnknownError extends Error {}

/**
 * Decides about a reply nobody is watching (its question was asked on another instance and the word
 * has not come yet, or the client is gone): true keeps it for a watcher about to subscribe, false
 * drops it and cancels the question if it is still generating.
 */
export type UnclaimedReplyHandler = (reply: Reply) => boolean;

/** Bounds how long a request waits for one Redis call; rejects when it is over. */
export type RequestBound = <T>(call: Promise<T>) => Promise<T>;

export interface AiClientOptions {
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
  /** Consumer group of the workers, whose depth the gate reads. Default `workers`. */
  consumerGroup?: string;
  /** How long a cancel mark lives, in ms. Default 60,000. */
  cancelTtlMs?: number;
  /** How long a kept reply waits for its watcher, in ms; then it is dropped and its question cancelled. Default 5,000. */
  keepMs?: number;
  /** Most replies kept at once; beyond that the oldest question's are dropped. Default 10,000. */
  maxKept?: number;
  /** How long an enqueue, and then its settle, may keep the caller waiting. Default: a 2 s deadline. */
  bound?: RequestBound;
}

/** How long an outcome key outlives the question's deadline, in ms. */
const OUTCOME_SLACK_MS = 60_000;

/**
 * The gateway's one client for the AI path, a @nestjs/microservices ClientProxy: questions go onto
 * the Redis Stream, replies come on this instance's Pub/Sub channel and are handed to the
 * observable watching that question. The typed methods are the patterns with their types.
 *
 * An enqueue's outcome is always known to whoever was told it: the script queues a message id at
 * most once and records it; when its reply does not come in time, a settle sent behind it on the
 * same connection reads what Redis did (queued) or makes sure it never will (refused).
 */
/** Who hears a watched answer: its replies in order, or why it ended without done or error. */
export interface AnswerWatcher {
  next(reply: Reply): void;
  error(err: unknown): void;
}

export class AiClient extends ClientProxy {
  private readonly replies: ReplyChannel;
  private readonly kept: KeptReplies;
  private readonly watchers = new Map<string, (reply: Reply) => void>();
  private connecting: Promise<void> | null = null;
  private unclaimed: UnclaimedReplyHandler = () => false;
  private readonly stream: string;
  private readonly bound: RequestBound;

  constructor(private readonly o: AiClientOptions) {
    super();
    this.replies = new ReplyChannel(o.subscriber, o.instanceId);
    this.kept = new KeptReplies(o.keepMs ?? 5_000, o.maxKept ?? 10_000, (id) => void this.markCancelled(id).catch(() => undefined));
    this.stream = o.questionStream ?? 'td:questions';
    this.bound = o.bound ?? defaultBound;
  }

  /** The channel replies for this instance's sessions arrive on (a question's replyTo). */
  get replyChannel(): string {
    return this.replies.name;
  }

  /** The channel where workers publish batches of this instance's replies. */
  get replyBatchChannel(): string {
    return this.replies.batchName;
  }

  /** Replies that failed to parse since start (a bad entry of a batch counts alone). */
  get invalidReplyCount(): number {
    return this.replies.invalidReplyCount;
  }

  /** Questions being watched on this instance. */
  get watching(): number {
    return this.watchers.size;
  }

  /** Subscribes to the reply channel once; every send and emit awaits it. */
  connect(): Promise<void> {
    this.connecting ??= (async () => {
      this.replies.onReply((r) => this.route(r));
      await this.replies.start();
    })();
    return this.connecting;
  }

  async close(): Promise<void> {
    this.watchers.clear();
    this.kept.clear();
    await this.replies.stop();
    this.connecting = null;
  }

  /** Set once by the owner of the sessions, which the client cannot know about. */
  handleUnclaimed(handler: UnclaimedReplyHandler): void {
    this.unclaimed = handler;
  }

  /** Sees every reply on this instance's channel, watched or not (the breaker counts outcomes). */
  onReply(handler: ReplyHandler): () => void {
    return this.replies.onReply(handler);
  }

  unwrap<T>(): T {
    return this.o.commands as T;
  }

  enqueue(req: EnqueueRequest): Promise<AskResult> {
    return lastValueFrom(this.send<AskResult, EnqueueRequest>(AI_PATTERNS.enqueue, req));
  }

  answer(req: AnswerRequest): Observable<Reply> {
    return this.send<Reply, AnswerRequest>(AI_PATTERNS.answer, req);
  }

  /**
   * answer() without the Observable, for a caller that relays every token: the same watch, started
   * as answer()'s is (once connected), each reply handed to `next` as it arrives, a missed deadline
   * to `error`. Ends after done or error; the returned function stops it and, before the end,
   * cancels the question. A token through rxjs's chain of subscribers costs more than the relay's
   * own work on it.
   */
  watchAnswer(req: AnswerRequest, o: AnswerWatcher): () => void {
    let stop: (() => void) | null = null;
    let stopped = false;
    this.connect().then(
      () => {
        if (stopped) return;
        stop = this.watch(req.messageId, req.timeoutMs, (p) => {
          if (p.err !== undefined && p.err !== null) o.error(p.err);
          else if (p.response !== undefined) o.next(p.response as Reply);
        });
      },
      (err: unknown) => {
        if (!stopped) o.error(err);
      },
    );
    return () => {
      stopped = true;
      stop?.();
    };
  }

  /**
   * The line's counter of questions that ever left it (started, or dropped before they did), as the
   * consumer group reads it: entries read - pending + answering (those being answered). A question
   * queued when it stood at d has moved up by its growth since. Null when the group does not exist.
   */
  async queueProgress(answering: number): Promise<number | null> {
    const groups = (await this.o.commands.xinfo('GROUPS', this.stream).catch(() => [])) as unknown[][];
    const group = this.o.consumerGroup ?? 'workers';
    for (const g of groups) {
      const f = new Map<string, unknown>();
      for (let i = 0; i + 1 < g.length; i += 2) f.set(String(g[i]), g[i + 1]);
      if (f.get('name') === group) return (Number(f.get('entries-read')) || 0) - Number(f.get('pending') ?? 0) + answering;
    }
    return null;
  }

  liveWorkers(): Promise<WorkerHeartbeat[]> {
    return lastValueFrom(this.send<WorkerHeartbeat[], Record<string, never>>(AI_PATTERNS.workers, {}));
  }

  cancel(messageId: string): Promise<void> {
    return lastValueFrom(this.emit<void, CancelEvent>(AI_PATTERNS.cancel, { messageId }), { defaultValue: undefined });
  }

  /** Nobody will watch this question (its client was told it was refused): drop its replies, stop its worker. */
  forget(messageId: string): void {
    this.kept.forget(messageId);
  }

  protected publish(packet: ReadPacket, callback: (packet: WritePacket) => void): () => void {
    const once = <T>(p: Promise<T>): (() => void) => {
      p.then(
        (response) => callback({ response, isDisposed: true }),
        (err: unknown) => callback({ err }),
      );
      return () => undefined;
    };
    switch (packet.pattern) {
      case AI_PATTERNS.enqueue:
        return once(this.enqueueKnowing(packet.data as EnqueueRequest));
      case AI_PATTERNS.workers:
        return once(liveWorkers(this.o.commands));
      case AI_PATTERNS.answer: {
        const req = packet.data as AnswerRequest;
        return this.watch(req.messageId, req.timeoutMs, callback);
      }
      case AI_PATTERNS.ask: {
        const req = packet.data as AskRequest;
        if (req.question.replyTo !== this.replyChannel) {
          callback({ err: new UnknownPatternError(`chat.ask needs replies on ${this.replyChannel}`) });
          return () => undefined;
        }
        // Watch first: a fast worker may answer before the enqueue call returns.
        const unwatch = this.watch(req.question.id, req.timeoutMs, callback);
        this.enqueueKnowing(req).then(
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
    await this.markCancelled((packet.data as CancelEvent).messageId);
    return undefined as T;
  }

  /**
   * The enqueue, decided by what Redis did: the script's reply if it comes in time, else the reply
   * of a settle sent behind it. Both unanswered: EnqueueUnknownError, and the question is cancelled
   * should the settle, still under way, find it queued.
   */
  private async enqueueKnowing(req: EnqueueRequest): Promise<AskResult> {
    const q = req.question;
    const call = this.gatedAsk(req);
    try {
      return await this.bound(call);
    } catch (err) {
      if (err instanceof QuestionRefusedError) throw err;
      // Late or failed: what the script did, if it ran, is recorded under the message id.
    }
    call.catch(() => undefined);
    const settle = settleAsk(this.o.commands, [outcomeKey(this.stream, q.id)], [outcomeTtl(q.deadline)]);
    let settled: string;
    try {
      settled = await this.bound(settle);
    } catch {
      settle.then((s) => (s === 'refused' ? undefined : this.markCancelled(q.id)), () => undefined).catch(() => undefined);
      throw new EnqueueUnknownError(`the enqueue of ${q.id} and its settle did not answer in time`);
    }
    if (settled === 'refused') throw new QuestionRefusedError(`${q.id} was not queued`);
    return { status: 'queued', entryId: settled, waitMs: -1, depth: -1 };
  }

  private async gatedAsk(req: EnqueueRequest): Promise<AskResult> {
    const q = req.question;
    // No gate: -1 skips the depth too (the "before" server only appends).
    const maxWait = req.gate ? Math.max(0, Math.floor(req.gate.maxWaitMs)) : -1;
    const [status, waitMs, depth, entryId, fifth] = await gatedAsk(
      this.o.commands,
      [this.stream, outcomeKey(this.stream, q.id)],
      [
        this.o.consumerGroup ?? 'workers',
        maxWait,
        Math.max(0, req.gate?.throughputPerSec ?? 0),
        this.o.questionStreamMaxLen ?? 100_000,
        Math.max(0, Math.floor(req.gate?.answering ?? 0)),
        outcomeTtl(q.deadline),
        Math.max(0, Math.floor(req.gate?.extraWaitMs ?? 0)),
        ...questionToFields(q),
      ],
    );
    if (status === 'refused') throw new QuestionRefusedError(`${q.id} was settled as refused`);
    return status === 'ok'
      ? { status: 'queued', entryId: entryId ?? '', waitMs, depth, dequeued: fifth ?? -1 }
      : { status: 'overloaded', waitMs, depth, rateWaitMs: fifth ?? waitMs };
  }

  private async markCancelled(messageId: string): Promise<void> {
    await this.o.commands.set(protocolKeys.cancel(messageId), '1', 'PX', this.o.cancelTtlMs ?? 60_000);
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
    for (const r of this.kept.take(messageId)) deliver(r);
    return () => {
      if (finished) return;
      finish();
      // Unsubscribed before the answer ended: the client is gone, the worker stops.
      void this.markCancelled(messageId).catch(() => undefined);
    };
  }

  private route(reply: Reply): void {
    const watcher = this.watchers.get(reply.messageId);
    if (watcher) {
      watcher(reply);
      return;
    }
    const keep = this.unclaimed(reply);
    // A watcher may have subscribed synchronously inside the handler.
    const adopted = this.watchers.get(reply.messageId);
    if (adopted) {
      adopted(reply);
      return;
    }
    if (keep) this.kept.add(reply);
    else if (reply.type === 'token') void this.markCancelled(reply.messageId).catch(() => undefined);
  }
}

function outcomeTtl(deadline: number): number {
  return Math.max(1_000, Math.floor(deadline - Date.now()) + OUTCOME_SLACK_MS);
}

function defaultBound<T>(call: Promise<T>): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('Redis did not answer within 2000 ms')), 2_000);
    call.then(
      (v) => {
        clearTimeout(t);
        resolve(v);
      },
      (err: unknown) => {
        clearTimeout(t);
        reject(err);
      },
    );
  });
}
