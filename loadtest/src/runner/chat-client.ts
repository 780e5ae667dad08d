import { createParser } from 'eventsource-parser';
import { errors as undiciErrors, type Dispatcher, type Pool } from 'undici';
import { JwtSigner } from './jwt-signer';
import type { Metrics } from './metrics';

/** Every wait of an iteration has one; past it the request counts as status 0 (no answer). */
export interface Deadlines {
  /** GET /chat/stream until the `session` event. */
  sessionMs: number;
  /** POST until its response. */
  postMs: number;
  /** POST sent until the first token. */
  firstTokenMs: number;
  /** POST sent until `done`. */
  doneMs: number;
}

export const DEFAULT_DEADLINES: Deadlines = { sessionMs: 10_000, postMs: 10_000, firstTokenMs: 30_000, doneMs: 60_000 };

export interface IterationResult {
  outcome: 'completed' | 'refused' | 'error' | 'interrupted';
  /** Wait asked by a refusal (Retry-After), in ms. */
  retryAfterMs?: number;
}

export interface ChatClientOptions {
  pool: Pool;
  metrics: Metrics;
  deadlines: Deadlines;
  question: string;
  /** HS256 secret: each user gets its own JWT (sub = user id), as the gateway's per-user limits expect. */
  jwtSecret?: string;
  /** Longest Retry-After honoured before asking again. Default 60 s. */
  retryAfterMaxMs?: number;
}

interface Problem {
  code?: string;
}

function retryAfterMs(headers: Dispatcher.ResponseData['headers']): number | undefined {
  const raw = headers['retry-after'];
  const v = Array.isArray(raw) ? raw[0] : raw;
  if (v === undefined) return undefined;
  const s = Number(v);
  return Number.isFinite(s) && s >= 0 ? s * 1_000 : undefined;
}

async function problemCode(body: Dispatcher.ResponseData['body']): Promise<string> {
  try {
    const p = (await body.json()) as Problem;
    return typeof p.code === 'string' ? p.code : 'no_code';
  } catch {
    return 'no_json';
  }
}

function failureKind(err: unknown): string {
  if (err instanceof undiciErrors.HeadersTimeoutError) return 'headers_timeout';
  if (err instanceof undiciErrors.ConnectTimeoutError) return 'connect_timeout';
  if (err instanceof undiciErrors.SocketError) return 'socket_error';
  const code = (err as { code?: unknown }).code;
  return typeof code === 'string' ? code.toLowerCase() : 'request_error';
}

/** What the runner drives: one user's whole chat lifecycle, over one transport. */
export interface LifecycleClient {
  /** `retry`: ask again after a refused question (a user); false for an abuser's one-shot. */
  lifecycle(role: string, user: string, stop: AbortSignal, retry?: boolean): Promise<IterationResult>;
}

/**
 * One user's chat lifecycle through the load balancer: open the SSE stream, wait for `session`,
 * POST a question with the session's token, read the streamed answer to `done`, close.
 */
export class ChatClient implements LifecycleClient {
  private readonly jwt: JwtSigner;

  constructor(private readonly o: ChatClientOptions) {
    this.jwt = new JwtSigner(o.jwtSecret);
  }

  private authFor(user: string): Record<string, string> {
    const t = this.jwt.tokenFor(user);
    return t ? { authorization: `Bearer ${t}` } : {};
  }

  /** DELETE the session; a failure only leaves it to the resume window. */
  private async close(s: { sessionId: string; token: string }): Promise<void> {
    const { pool, deadlines: d } = this.o;
    try {
      const r = await pool.request({
        path: `/chat/sessions/${encodeURIComponent(s.sessionId)}`,
        method: 'DELETE',
        headers: { authorization: `Bearer ${s.token}` },
        headersTimeout: d.postMs,
        bodyTimeout: d.postMs,
      });
      await r.body.dump();
    } catch {
      // the stream's close and the resume window end it all the same
    }
  }

  /** `retry`: ask again after a refused question (a user); false for an abuser's one-shot. */
  async lifecycle(role: string, user: string, stop: AbortSignal, retry = true): Promise<IterationResult> {
    const { metrics: m, pool, deadlines: d } = this.o;
    m.started(role);
    const ac = new AbortController();
    const onStop = (): void => ac.abort();
    stop.addEventListener('abort', onStop);
    const t0 = performance.now();
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
      let res: Dispatcher.ResponseData;
      try {
        res = await pool.request({
          path: '/chat/stream',
          method: 'GET',
          headers: { accept: 'text/event-stream', ...this.authFor(user) },
          signal: ac.signal,
          headersTimeout: d.sessionMs,
          bodyTimeout: 0,
        });
      } catch (err) {
        return fail(`0 stream ${failureKind(err)}`, 'status0');
      }
      const tHead = performance.now();
      m.latency(role, 'streamOpen', tHead - t0);
      if (res.statusCode !== 200) {
        // The refusal's body has the session deadline too (the stream has no body timeout).
        const timer = setTimeout(() => ac.abort(), Math.max(1, t0 + d.sessionMs - performance.now()));
        const code = await problemCode(res.body);
        clearTimeout(timer);
        m.status(role, `stream ${res.statusCode} ${code}`);
        if (res.statusCode === 429 || res.statusCode === 503) {
          m.latency(role, 'refusal', tHead - t0);
          m.refusal(role, res.statusCode === 429 ? '429' : '503');
          m.outcome(role, 'refused');
          return { outcome: 'refused', retryAfterMs: retryAfterMs(res.headers) };
        }
        m.outcome(role, 'error');
        return { outcome: 'error' };
      }
      m.status(role, 'stream 200');

      // The stream: one state the waits below look at, woken on every event and at the end.
      let session: { sessionId: string; token: string } | undefined;
      let firstTokenAt = 0;
      let doneAt = 0;
      let errorCode: string | undefined;
      let ended = false;
      let wake: (() => void) | null = null;
      const parser = createParser({
        onEvent: (e) => {
          switch (e.event) {
            case 'session':
              try {
                session = JSON.parse(e.data) as { sessionId: string; token: string };
              } catch {
                errorCode = 'bad_session_event';
              }
              break;
            case 'token':
              if (!firstTokenAt) firstTokenAt = performance.now();
              break;
            case 'done':
              doneAt = performance.now();
              break;
            case 'failed':
              try {
                errorCode = (JSON.parse(e.data) as Problem).code ?? 'no_code';
              } catch {
                errorCode = 'no_json';
              }
              break;
            case 'expired':
              ended = true;
              break;
            default:
              break;
          }
          wake?.();
        },
      });
      const decoder = new TextDecoder();
      res.body.on('data', (chunk: Buffer) => parser.feed(decoder.decode(chunk, { stream: true })));
      const onEnd = (): void => {
        ended = true;
        wake?.();
      };
      res.body.on('end', onEnd);
      res.body.on('close', onEnd);
      res.body.on('error', onEnd);
      ac.signal.addEventListener('abort', onEnd);
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

      try {
        if (!(await until(() => session !== undefined, t0 + d.sessionMs))) {
          if (errorCode) return fail(`stream ${errorCode}`);
          return fail(ended ? 'stream ended_before_session' : '0 session_timeout', ended ? undefined : 'status0');
        }
        const s = session as unknown as { sessionId: string; token: string };
        m.latency(role, 'session', performance.now() - t0);

        // A closed-model user whose question is refused (429/503) keeps its stream and asks again
        // after Retry-After (bounded), until the first-token deadline; an abuser does not wait.
        const tFirstPost = performance.now();
        let tPost = tFirstPost;
        let post: Dispatcher.ResponseData;
        for (;;) {
          tPost = performance.now();
          try {
            post = await pool.request({
              path: `/chat/sessions/${encodeURIComponent(s.sessionId)}/messages`,
              method: 'POST',
              headers: { 'content-type': 'application/json', authorization: `Bearer ${s.token}` },
              body: JSON.stringify({ question: this.o.question }),
              signal: ac.signal,
              headersTimeout: d.postMs,
              bodyTimeout: d.postMs,
            });
          } catch (err) {
            return fail(`0 post ${failureKind(err)}`, 'status0');
          }
          const tPostDone = performance.now();
          m.latency(role, 'post', tPostDone - tPost);
          if (post.statusCode === 202) break;
          const code = await problemCode(post.body);
          m.status(role, `post ${post.statusCode} ${code}`);
          if (post.statusCode !== 429 && post.statusCode !== 503) {
            m.outcome(role, 'error');
            return { outcome: 'error' };
          }
          m.latency(role, 'refusal', tPostDone - tPost);
          m.refusal(role, post.statusCode === 429 ? '429' : '503');
          const wait = Math.min(retryAfterMs(post.headers) ?? 1_000, this.o.retryAfterMaxMs ?? 60_000);
          if (!retry || performance.now() + wait - tFirstPost > d.firstTokenMs) {
            m.outcome(role, 'refused');
            return { outcome: 'refused', retryAfterMs: retryAfterMs(post.headers) };
          }
          await new Promise<void>((resolve) => {
            const t = setTimeout(resolve, wait);
            wake = () => {
              if (!ended && !stop.aborted) return;
              clearTimeout(t);
              resolve();
            };
          });
          wake = null;
          if (ended || stop.aborted) return fail('answer stream_ended');
        }
        await post.body.dump();
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
        // A client done with its session says so: a stream that only drops keeps its slot for the
        // gateway's resume window (SSE_RESUME_MS), in case the client comes back.
        if (session) await this.close(session);
        ac.abort();
        res.body.destroy();
      }
    } finally {
      stop.removeEventListener('abort', onStop);
    }
  }
}
