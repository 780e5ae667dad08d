import { io, type Socket } from 'socket.io-client';
import type { Deadlines, IterationResult, LifecycleClient } from './chat-client';
import { JwtSigner } from './jwt-signer';
import type { Metrics } from './metrics';

export interface SocketChatClientOptions {
  /** The load balancer's origin, e.g. http://127.0.0.1:8080. */
  origin: string;
  metrics: Metrics;
  deadlines: Deadlines;
  question: string;
  jwtSecret?: string;
  /** Longest Retry-After honoured before asking again. Default 60 s. */
  retryAfterMaxMs?: number;
}

interface Problem {
  code?: string;
  status?: number;
  retryAfterMs?: number;
}

/**
 * The same user lifecycle as ChatClient, over Socket.IO (namespace /chat, WebSocket only):
 * connect (the dam admits it) and wait for `session`, `ask` with an acknowledgement (a refused one
 * is asked again after its retryAfterMs, bounded, like a refused POST), read `token`s to `done`,
 * disconnect. The metrics use the same keys as over SSE ("stream" is the connect, "post" the ask),
 * so a report compares the two transports directly.
 */
export class SocketChatClient implements LifecycleClient {
  private readonly jwt: JwtSigner;

  constructor(private readonly o: SocketChatClientOptions) {
    this.jwt = new JwtSigner(o.jwtSecret);
  }

  async lifecycle(role: string, user: string, stop: AbortSignal, retry = true): Promise<IterationResult> {
    const { metrics: m, deadlines: d } = this.o;
    m.started(role);
    const t0 = performance.now();
    const token = this.jwt.tokenFor(user);
    const socket: Socket = io(`${this.o.origin}/chat`, {
      transports: ['websocket'],
      reconnection: false,
      forceNew: true,
      timeout: d.sessionMs,
      auth: token ? { token } : {},
    });
    // One state the waits look at, woken on every event.
    let session = false;
    let firstTokenAt = 0;
    let doneAt = 0;
    let errorCode: string | undefined;
    let ended = false;
    let refusal: Problem | undefined;
    let transportError: string | undefined;
    let wake: (() => void) | null = null;
    const poke = (): void => wake?.();
    socket.on('connect_error', (err: Error & { data?: Problem }) => {
      if (err.data?.code) refusal = err.data;
      else transportError = err.message;
      ended = true;
      poke();
    });
    socket.on('session', () => {
      session = true;
      poke();
    });
    socket.on('token', () => {
      if (!firstTokenAt) firstTokenAt = performance.now();
      poke();
    });
    socket.on('done', () => {
      doneAt = performance.now();
      poke();
    });
    socket.on('failed', (e: Problem) => {
      errorCode = e?.code ?? 'no_code';
      poke();
    });
    socket.on('expired', () => {
      ended = true;
      poke();
    });
    socket.on('disconnect', () => {
      ended = true;
      poke();
    });
    const onStop = (): void => {
      ended = true;
      poke();
    };
    stop.addEventListener('abort', onStop);
    const until = async (pred: () => boolean, deadlineAt: number): Promise<boolean> => {
      while (!pred()) {
        if (ended || errorCode !== undefined) return false;
        const left = deadlineAt - performance.now();
        if (left <= 0) return false;
        await new Promise<void>((resolve) => {
          const t = setTimeout(resolve, left);
          wake = () => {
            clearTimeout(t);
            resolve();
          };
        });
        wake = null;
      }
      return true;
    };
    const fail = (key: string, kind?: 'status0'): IterationResult => {
      if (stop.aborted) {
        m.outcome(role, 'interrupted');
        return { outcome: 'interrupted' };
      }
      m.status(role, key);
      m.outcome(role, 'error', kind);
      return { outcome: 'error' };
    };
    try {
      const admitted = await until(() => session, t0 + d.sessionMs);
      const tHead = performance.now();
      if (!admitted) {
        if (refusal) {
          m.latency(role, 'streamOpen', tHead - t0);
          m.status(role, `stream ${refusal.status ?? 0} ${refusal.code ?? 'no_code'}`);
          if (refusal.status === 429 || refusal.status === 503) {
            m.latency(role, 'refusal', tHead - t0);
            m.refusal(role, refusal.status === 429 ? '429' : '503');
            m.outcome(role, 'refused');
            return { outcome: 'refused', retryAfterMs: refusal.retryAfterMs };
          }
          m.outcome(role, 'error');
          return { outcome: 'error' };
        }
        if (transportError) return fail(`0 stream ${transportError.replace(/\s+/g, '_').slice(0, 40)}`, 'status0');
        return fail(ended ? 'stream ended_before_session' : '0 session_timeout', ended ? undefined : 'status0');
      }
      m.latency(role, 'streamOpen', tHead - t0);
      m.latency(role, 'session', tHead - t0);
      m.status(role, 'stream 200');

      const tFirstPost = performance.now();
      let tPost = tFirstPost;
      for (;;) {
        tPost = performance.now();
        let ack: { messageId?: string } & Problem;
        try {
          ack = (await socket.timeout(d.postMs).emitWithAck('ask', { question: this.o.question })) as typeof ack;
        } catch {
          return fail(ended ? 'post stream_ended' : '0 post ack_timeout', ended ? undefined : 'status0');
        }
        const tAck = performance.now();
        m.latency(role, 'post', tAck - tPost);
        if (ack.messageId) break;
        m.status(role, `post ${ack.status ?? 0} ${ack.code ?? 'no_code'}`);
        if (ack.status !== 429 && ack.status !== 503) {
          m.outcome(role, 'error');
          return { outcome: 'error' };
        }
        m.latency(role, 'refusal', tAck - tPost);
        m.refusal(role, ack.status === 429 ? '429' : '503');
        const wait = Math.min(ack.retryAfterMs ?? 1_000, this.o.retryAfterMaxMs ?? 60_000);
        if (!retry || performance.now() + wait - tFirstPost > d.firstTokenMs) {
          m.outcome(role, 'refused');
          return { outcome: 'refused', retryAfterMs: ack.retryAfterMs };
        }
        await until(() => false, performance.now() + wait);
        if (ended || stop.aborted) return fail('answer stream_ended');
      }
      m.status(role, 'post 202');
      if (!(await until(() => firstTokenAt > 0, tPost + d.firstTokenMs))) {
        if (errorCode) return fail(`answer ${errorCode}`);
        return fail(ended ? 'answer stream_ended' : '0 ttft_timeout', ended ? undefined : 'status0');
      }
      m.latency(role, 'ttft', firstTokenAt - tPost);
      if (!(await until(() => doneAt > 0, tPost + d.doneMs))) {
        if (errorCode) return fail(`answer ${errorCode}`);
        return fail(ended ? 'answer stream_ended' : '0 done_timeout', ended ? undefined : 'status0');
      }
      m.latency(role, 'done', doneAt - tPost);
      m.latency(role, 'iteration', performance.now() - t0);
      m.status(role, 'answer done');
      m.outcome(role, 'completed');
      return { outcome: 'completed' };
    } finally {
      stop.removeEventListener('abort', onStop);
      // Disconnecting ends the session on the server (and frees its slot).
      socket.close();
    }
  }
}
