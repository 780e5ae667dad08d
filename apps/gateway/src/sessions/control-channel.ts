import { setTimeout as sleep } from 'node:timers/promises';
import { Inject, Injectable, type OnApplicationBootstrap } from '@nestjs/common';
import type { Redis } from 'ioredis';
import { InjectPinoLogger, PinoLogger } from 'nestjs-pino';
import { INSTANCE_ID } from '../common/instance';
import { REDIS_COMMANDS, REDIS_SUBSCRIBER } from '../common/redis/redis.module';
import type { CloseReason, SessionEvent } from './session-events';

/** What one instance tells the instance that holds a session (and, for a resume elsewhere, back). */
export type ControlMessage =
  | { type: 'close'; sessionId: string }
  | { type: 'asked'; sessionId: string; messageId: string; deadline: number }
  // A client resumed on `edge`: carry the session's events there, those after `after` first.
  | { type: 'attach'; sessionId: string; edge: string; attachId: string; after: number }
  // The answer to attach.
  | { type: 'attached'; sessionId: string; attachId: string; from: string; status: 'ok' | 'gone' | 'gap' }
  // Events for the client held at the edge (none: a keep-alive); `end`: the session ended this connection.
  | { type: 'relay'; sessionId: string; attachId: string; from: string; events: SessionEvent[]; end?: boolean }
  // The client held at the edge went away.
  | { type: 'detach'; sessionId: string; attachId: string; reason: CloseReason };

const channelOf = (instanceId: string) => `td:control:${instanceId}`;

/** Messages between instances about the sessions they hold, on a Pub/Sub channel per instance. */
@Injectable()
export class ControlChannel implements OnApplicationBootstrap {
  private readonly handlers: { [T in ControlMessage['type']]?: (m: Extract<ControlMessage, { type: T }>) => void } = {};

  constructor(
    @Inject(INSTANCE_ID) private readonly instanceId: string,
    @Inject(REDIS_COMMANDS) private readonly redis: Redis,
    @Inject(REDIS_SUBSCRIBER) private readonly subscriber: Redis,
    @InjectPinoLogger(ControlChannel.name) private readonly logger: PinoLogger,
  ) {}

  on<T extends ControlMessage['type']>(type: T, handler: (m: Extract<ControlMessage, { type: T }>) => void): void {
    (this.handlers as Record<string, unknown>)[type] = handler;
  }

  async onApplicationBootstrap(): Promise<void> {
    const mine = channelOf(this.instanceId);
    this.subscriber.on('message', (channel: string, payload: string) => {
      if (channel === mine) this.receive(payload);
    });
    await this.subscriber.subscribe(mine);
  }

  /** Publishes once; resolves with how many subscribers got it (0: the instance is not listening). */
  async send(to: string, m: ControlMessage): Promise<number> {
    return this.redis.publish(channelOf(to), JSON.stringify(m));
  }

  /**
   * Publishes until the instance got it or `until` (epoch ms) passed: Pub/Sub delivers only to a
   * subscriber connected now, and one reconnecting after a Redis restart misses what came meanwhile.
   */
  async deliver(to: string, m: ControlMessage, until: number): Promise<boolean> {
    for (let wait = 50; ; wait = Math.min(wait * 2, 500)) {
      const got = await this.send(to, m).catch(() => 0);
      if (got > 0) return true;
      if (Date.now() + wait >= until) return false;
      await sleep(wait);
    }
  }

  private receive(payload: string): void {
    let m: Partial<ControlMessage> & Record<string, unknown>;
    try {
      m = JSON.parse(payload) as typeof m;
    } catch {
      this.logger.warn('ignored a malformed control message');
      return;
    }
    if (typeof m.sessionId !== 'string') return;
    const str = (k: string) => typeof m[k] === 'string';
    switch (m.type) {
      case 'close':
        this.handlers.close?.({ type: 'close', sessionId: m.sessionId });
        return;
      case 'asked':
        if (str('messageId') && typeof m.deadline === 'number') {
          this.handlers.asked?.({ type: 'asked', sessionId: m.sessionId, messageId: m.messageId as string, deadline: m.deadline });
        }
        return;
      // Written by our own instances only (the channels are not reachable from outside): shapes are checked, not every field.
      case 'attach':
        if (str('edge') && str('attachId') && typeof m['after'] === 'number') this.handlers.attach?.(m as Extract<ControlMessage, { type: 'attach' }>);
        return;
      case 'attached':
        if (str('attachId') && str('from') && str('status')) this.handlers.attached?.(m as Extract<ControlMessage, { type: 'attached' }>);
        return;
      case 'relay':
        if (str('attachId') && str('from') && Array.isArray(m['events'])) this.handlers.relay?.(m as Extract<ControlMessage, { type: 'relay' }>);
        return;
      case 'detach':
        if (str('attachId')) this.handlers.detach?.(m as Extract<ControlMessage, { type: 'detach' }>);
        return;
      default:
        return;
    }
  }
}
