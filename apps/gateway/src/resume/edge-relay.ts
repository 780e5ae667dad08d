import { randomUUID } from 'node:crypto';
import { Inject, Injectable, type OnModuleDestroy, type OnModuleInit } from '@nestjs/common';
import { GATEWAY_CONFIG, type GatewayConfig } from '../common/config/config';
import { INSTANCE_ID } from '../common/instance';
import { LifecycleService } from '../common/lifecycle.service';
import { ControlChannel, type ControlMessage } from '../sessions/control-channel';
import type { SseConnection } from '../sse/sse-connection';

/** How long an edge waits for the session's instance to answer an attach. */
const ATTACH_TIMEOUT_MS = 2_000;

export type EdgeAttach = 'ok' | 'gone' | 'gap' | 'unreachable';

interface Edge {
  conn: SseConnection;
  home: string;
  sessionId: string;
  lastHeard: number;
}

interface Pending {
  conn: SseConnection;
  handle: string;
  home: string;
  resolve: (r: EdgeAttach) => void;
}

/**
 * This instance as the edge of a session held elsewhere: a client resumed here, so its stream
 * is held here and the session's events come from the session's instance over this instance's
 * control channel (RemoteConnection there). The dam is not asked: the session keeps the slot it
 * has on its own instance. When that instance stops sending (not even a keep-alive), it is taken
 * for dead and the stream ends; the client's next resume is then answered 204.
 */
@Injectable()
export class EdgeRelay implements OnModuleInit, OnModuleDestroy {
  private readonly pending = new Map<string, Pending>();
  private readonly edges = new Map<string, Edge>();
  private timer: NodeJS.Timeout | null = null;

  constructor(
    @Inject(GATEWAY_CONFIG) private readonly config: GatewayConfig,
    @Inject(INSTANCE_ID) private readonly instanceId: string,
    private readonly control: ControlChannel,
    lifecycle: LifecycleService,
  ) {
    // A draining edge lets its clients go at once: they resume on another instance.
    lifecycle.onDrain(() => {
      for (const id of [...this.edges.keys()]) this.endEdge(id);
    });
  }

  get size(): number {
    return this.edges.size;
  }

  onModuleInit(): void {
    this.control.on('attached', (m) => this.attached(m));
    this.control.on('relay', (m) => this.relay(m));
    // The session's instance pings every SSE_PING_MS; two missed pings and it is taken for dead.
    const silentMs = 2 * this.config.SSE_PING_MS + 1_000;
    this.timer = setInterval(() => {
      const before = Date.now() - silentMs;
      for (const [id, e] of this.edges) if (e.lastHeard < before) this.endEdge(id);
    }, this.config.SSE_PING_MS);
    this.timer.unref();
  }

  onModuleDestroy(): void {
    if (this.timer) clearInterval(this.timer);
  }

  /** Asks the session's instance for the events after `after` and the rest; resolves once it answered (or did not in time). */
  attach(home: string, sessionId: string, after: number, handle: string, conn: SseConnection): Promise<EdgeAttach> {
    const attachId = randomUUID();
    return new Promise<EdgeAttach>((resolve) => {
      const timer = setTimeout(() => settle('unreachable'), ATTACH_TIMEOUT_MS);
      const settle = (r: EdgeAttach): void => {
        clearTimeout(timer);
        if (!this.pending.delete(attachId)) return;
        resolve(r);
      };
      this.pending.set(attachId, { conn, handle, home, resolve: settle });
      this.control.send(home, { type: 'attach', sessionId, edge: this.instanceId, attachId, after }).then(
        (listeners) => {
          if (listeners === 0) settle('unreachable');
        },
        () => settle('unreachable'),
      );
    });
  }

  private attached(m: Extract<ControlMessage, { type: 'attached' }>): void {
    const p = this.pending.get(m.attachId);
    if (!p) {
      // Too late: nobody waits here any more.
      if (m.status === 'ok') this.detach(m.sessionId, m.attachId, m.from);
      return;
    }
    if (m.status !== 'ok') return p.resolve(m.status);
    if (p.conn.gone) {
      this.detach(m.sessionId, m.attachId, p.home);
      return p.resolve('gone');
    }
    // Opened here, in the message handler, so the relays that follow on the channel find it ready.
    p.conn.open({ resumeHandle: p.handle });
    this.edges.set(m.attachId, { conn: p.conn, home: p.home, sessionId: m.sessionId, lastHeard: Date.now() });
    p.conn.onClose((reason) => {
      if (this.edges.delete(m.attachId)) void this.control.send(p.home, { type: 'detach', sessionId: m.sessionId, attachId: m.attachId, reason }).catch(() => undefined);
    });
    p.resolve('ok');
  }

  private relay(m: Extract<ControlMessage, { type: 'relay' }>): void {
    const e = this.edges.get(m.attachId);
    if (!e) {
      // The client here is gone (or never was): the session's instance should stop sending.
      if (!m.end && !this.pending.has(m.attachId)) this.detach(m.sessionId, m.attachId, m.from);
      return;
    }
    e.lastHeard = Date.now();
    for (const ev of m.events) e.conn.send(ev);
    if (m.end) {
      this.edges.delete(m.attachId);
      e.conn.end();
    }
  }

  /** Ends the client's stream here; its reconnect resumes wherever it lands. */
  private endEdge(attachId: string): void {
    const e = this.edges.get(attachId);
    if (!e) return;
    e.conn.end();
  }

  private detach(sessionId: string, attachId: string, home: string): void {
    void this.control.send(home, { type: 'detach', sessionId, attachId, reason: 'client' }).catch(() => undefined);
  }
}
