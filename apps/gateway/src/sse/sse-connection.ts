import { Inject, Injectable, type OnModuleDestroy, type OnModuleInit } from '@nestjs/common';
import type { Request, Response } from 'express';
import { GATEWAY_CONFIG, type GatewayConfig } from '../common/config/config';
import { randomInt } from 'node:crypto';
import { afterIo } from '../common/after-io';
import { formatEventId } from '../resume/resume-id';
import type { CloseReason, ExpiredReason, LineEventData, OpenContext, SessionEvent, WaitingConnection } from '../sessions/session-events';
import { SSE_HEADERS, SSE_PING, sseEvent, sseRetry } from './sse';

/** Bytes a client may leave unread before it counts as stuck and is cut off. */
const MAX_UNREAD_BYTES = 512 * 1024;

/** EventSource reconnects this soon after a drop: well inside SSE_RESUME_MS, and no storm. */
export const RECONNECT_MS = 1_000;

/**
 * The `retry:` that comes with `expired`. Draining: soon and spread, the reconnect gets a new
 * session on another instance. Idle or lifetime: the reconnect is answered 204, which stops
 * EventSource; no hurry.
 */
export function retryAfterExpiry(reason: ExpiredReason): number {
  return reason === 'draining' ? 250 + randomInt(751) : 2_000;
}

/**
 * One SSE stream (GET /chat/stream) as the session core sees it. Events are written once per
 * event-loop turn: those of one turn (the tokens of the reply batches read, a token and its done)
 * are one chunk, one write to the socket.
 */
export class SseConnection implements WaitingConnection {
  readonly transport = 'sse' as const;
  readonly resumable = true;
  gone = false;
  private handle: string | undefined;
  private reason: CloseReason = 'client';
  private closed: ((reason: CloseReason) => void) | null = null;
  /** Events of this turn not yet written. */
  private queued = '';
  /** Cut off (slow client): nothing more is queued. */
  private ended = false;

  /** Listens for the close at once: a client that gives up while the dam answers must still free its slot. */
  constructor(
    private readonly req: Request,
    private readonly res: Response,
    private readonly pinger: SsePinger,
  ) {
    res.once('close', () => {
      this.gone = true;
      pinger.remove(this);
      this.closed?.(this.reason);
    });
  }

  open(ctx: OpenContext = {}): void {
    this.handle = ctx.resumeHandle;
    this.startStream();
    if (this.handle !== undefined) this.write(sseRetry(RECONNECT_MS));
  }

  /** 200 and the headers, once: a stream that waited in the line has sent them already. */
  private startStream(): void {
    if (this.res.headersSent) return;
    this.res.status(200);
    for (const [k, v] of Object.entries(SSE_HEADERS)) this.res.setHeader(k, v);
    this.res.flushHeaders();
    this.req.socket.setKeepAlive(true, 10_000);
    this.pinger.add(this);
  }

  send(event: SessionEvent): boolean {
    const id = this.handle === undefined ? undefined : formatEventId(this.handle, event.id);
    const retryMs = event.name === 'expired' ? retryAfterExpiry(event.data.reason) : undefined;
    return this.write(sseEvent(event.name, event.data, { id, retryMs }));
  }

  notify<N extends keyof LineEventData>(name: N, data: LineEventData[N]): boolean {
    this.startStream();
    return this.write(sseEvent(name, data));
  }

  ping(): void {
    this.write(SSE_PING);
  }

  end(): void {
    this.flush();
    if (!this.res.writableEnded) this.res.end();
  }

  onClose(cb: (reason: CloseReason) => void): void {
    if (this.gone) queueMicrotask(() => cb(this.reason));
    else this.closed = cb;
  }

  /** Queues the chunk for this turn; the response's own state is read once per turn, at the flush. */
  private write(chunk: string): boolean {
    if (this.gone || this.ended) return false;
    if (this.queued === '') {
      if (this.res.writableEnded || this.res.destroyed || !this.roomFor(chunk)) return false;
      afterIo(this.flush);
    }
    this.queued += chunk;
    return true;
  }

  /** Whether the client keeps up: one that left MAX_UNREAD_BYTES unread is cut off. */
  private roomFor(chunk: string): boolean {
    if (this.res.writableLength + this.queued.length + chunk.length <= MAX_UNREAD_BYTES) return true;
    this.reason = 'slow_client';
    this.queued = '';
    this.ended = true;
    this.res.destroy();
    return false;
  }

  private readonly flush = (): void => {
    const chunk = this.queued;
    if (chunk === '') return;
    this.queued = '';
    if (!this.res.writableEnded && !this.res.destroyed && this.roomFor('')) this.res.write(chunk);
  };
}

/** Something kept alive by a ping: an SSE stream, or the link to a client resumed on another instance. */
export interface Pingable {
  ping(): void;
}

/** Pings every open SSE stream from one timer: 1,000 idle streams cost one wake-up per interval. */
@Injectable()
export class SsePinger implements OnModuleInit, OnModuleDestroy {
  private readonly streams = new Set<Pingable>();
  private timer: NodeJS.Timeout | null = null;

  constructor(@Inject(GATEWAY_CONFIG) private readonly config: GatewayConfig) {}

  onModuleInit(): void {
    this.timer = setInterval(() => {
      for (const s of this.streams) s.ping();
    }, this.config.SSE_PING_MS);
    this.timer.unref();
  }

  onModuleDestroy(): void {
    if (this.timer) clearInterval(this.timer);
  }

  add(s: Pingable): void {
    this.streams.add(s);
  }

  remove(s: Pingable): void {
    this.streams.delete(s);
  }
}
