/**
 * The benchmark's own clients, for what autocannon cannot drive: SSE streams (open to the
 * `session` event, tokens with their timing, idle streams held open), questions that must wait
 * for their answer before the session may ask again, and new TLS connections. Plain node:http,
 * node:tls and eventsource-parser: a lean client, so what is measured is the server.
 */
import http from 'node:http';
import net from 'node:net';
import tls from 'node:tls';
import { createParser } from 'eventsource-parser';
import * as hdr from 'hdr-histogram-js';

export interface LatencySummary {
  count: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
}

/** Latencies in µs (3 significant digits), reported in ms. */
export class Latency {
  private readonly h = hdr.build({ lowestDiscernibleValue: 1, highestTrackableValue: 600_000_000, numberOfSignificantValueDigits: 3 });
  record(ms: number): void {
    this.h.recordValue(Math.max(1, Math.round(ms * 1_000)));
  }
  get count(): number {
    return this.h.totalCount;
  }
  summary(): LatencySummary {
    const q = (p: number): number => Math.round(this.h.getValueAtPercentile(p) / 10) / 100;
    return { count: this.h.totalCount, p50: q(50), p90: q(90), p99: q(99), max: Math.round(this.h.maxValue / 10) / 100 };
  }
}

/** Counts by key (statuses with their problem code, errors). */
export class Tally {
  readonly counts: Record<string, number> = {};
  add(key: string, n = 1): void {
    this.counts[key] = (this.counts[key] ?? 0) + n;
  }
}

/** The measured part of a phase: meters started after the warm-up, stopped at its end. */
export interface Window {
  start(): void;
  stop(): void;
}

export const epochMs = (): number => performance.timeOrigin + performance.now();

export interface Response {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

/** One request, the whole body read. */
export function request(url: string, init: { method?: string; headers?: Record<string, string>; body?: string; agent?: http.Agent | false; timeoutMs?: number } = {}): Promise<Response> {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: u.hostname, port: u.port, path: `${u.pathname}${u.search}`, method: init.method ?? 'GET', headers: init.headers, agent: init.agent ?? false },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
        res.on('error', reject);
      },
    );
    req.setTimeout(init.timeoutMs ?? 10_000, () => req.destroy(new Error(`timeout: ${init.method ?? 'GET'} ${url}`)));
    req.on('error', reject);
    req.end(init.body);
  });
}

export function problemCode(body: string): string {
  try {
    const code = (JSON.parse(body) as { code?: unknown }).code;
    return typeof code === 'string' ? code : 'no_code';
  } catch {
    return 'no_json';
  }
}

export interface ChatSession {
  sessionId: string;
  token: string;
}

export interface OpenStream {
  status: number;
  headers: http.IncomingHttpHeaders;
  /** The refusal's problem code when status is not 200. */
  code?: string;
  session?: ChatSession;
  close(): void;
}

/**
 * GET /chat/stream on a new connection; resolves at the `session` event (or the refusal).
 * `onEvent` sees every event after it, `onClose` the end of the stream.
 */
export function openStream(
  base: string,
  opts: { onEvent?: (event: string, data: string) => void; onPing?: () => void; onClose?: () => void; timeoutMs?: number } = {},
): Promise<OpenStream> {
  const u = new URL(base);
  return new Promise((resolve, reject) => {
    let settled = false;
    const req = http.request({ host: u.hostname, port: u.port, path: '/chat/stream', headers: { accept: 'text/event-stream' }, agent: false });
    const close = (): void => {
      req.destroy();
    };
    const timer = setTimeout(() => {
      if (!settled) req.destroy(new Error('no session event in time'));
    }, opts.timeoutMs ?? 10_000);
    req.on('response', (res) => {
      const status = res.statusCode ?? 0;
      const headers = res.headers;
      if (status !== 200) {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          settled = true;
          clearTimeout(timer);
          resolve({ status, headers, code: problemCode(Buffer.concat(chunks).toString('utf8')), close });
        });
        return;
      }
      const parser = createParser({
        onEvent: (e) => {
          if (!settled && e.event === 'session') {
            settled = true;
            clearTimeout(timer);
            try {
              resolve({ status, headers, session: JSON.parse(e.data) as ChatSession, close });
            } catch {
              resolve({ status, headers, code: 'bad_session_event', close });
            }
            return;
          }
          opts.onEvent?.(e.event ?? 'message', e.data);
        },
        onComment: () => opts.onPing?.(),
      });
      res.setEncoding('utf8');
      res.on('data', (c: string) => parser.feed(c));
      res.on('close', () => opts.onClose?.());
    });
    req.on('error', (err) => {
      clearTimeout(timer);
      if (!settled) {
        settled = true;
        reject(err);
      } else opts.onClose?.();
    });
    req.end();
  });
}

function errKey(err: unknown): string {
  const code = (err as { code?: unknown }).code;
  return typeof code === 'string' ? code : err instanceof Error ? err.message.slice(0, 40) : 'error';
}

/** Runs `op` in `concurrency` closed loops: warm-up first (not counted), then the measured window. */
async function closedLoops(concurrency: number, warmupMs: number, seconds: number, window: Window, op: (measured: boolean, loop: number) => Promise<void>): Promise<number> {
  const t0 = performance.now();
  const measureFrom = t0 + warmupMs;
  const end = measureFrom + seconds * 1_000;
  let started = false;
  const startTimer = setTimeout(() => {
    started = true;
    window.start();
  }, warmupMs);
  await Promise.all(
    Array.from({ length: concurrency }, async (_, loop) => {
      while (performance.now() < end) {
        const measured = started && performance.now() >= measureFrom;
        await op(measured, loop);
      }
    }),
  );
  clearTimeout(startTimer);
  if (!started) window.start();
  window.stop();
  return (performance.now() - measureFrom) / 1_000;
}

export interface LoopResult {
  ops: number;
  perSec: number;
  latency: LatencySummary;
  tally: Record<string, number>;
}

/** Stream opens, each on a new connection, to the `session` event, then closed (the slot released). */
export async function streamOpenLoop(base: string, o: { concurrency: number; warmupMs: number; seconds: number; window: Window }): Promise<LoopResult> {
  const lat = new Latency();
  const tally = new Tally();
  // A client done with its session says so (DELETE, on a keep-alive connection): a stream that is
  // only closed keeps its slot SSE_RESUME_MS for a resume, and the loops would fill the budget.
  const agent = new http.Agent({ keepAlive: true, maxSockets: o.concurrency });
  const secs = await closedLoops(o.concurrency, o.warmupMs, o.seconds, o.window, async (measured) => {
    const t = performance.now();
    try {
      const s = await openStream(base);
      const ms = performance.now() - t;
      const done = s.session
        ? await request(`${base}/chat/sessions/${s.session.sessionId}`, { method: 'DELETE', headers: { Authorization: `Bearer ${s.session.token}` }, agent })
        : null;
      s.close();
      if (!measured) return;
      tally.add(s.session ? (done?.status === 204 ? '200 session' : `session, then DELETE ${done?.status}`) : `${s.status} ${s.code ?? ''}`);
      if (s.session && done?.status === 204) lat.record(ms);
    } catch (err) {
      if (measured) tally.add(`error ${errKey(err)}`);
    }
  });
  agent.destroy();
  return { ops: lat.count, perSec: lat.count / secs, latency: lat.summary(), tally: tally.counts };
}

interface AskingSession extends ChatSession {
  stream: OpenStream;
  /** Resolves when the question in flight on it has its `done` (or `error`). */
  idle: Promise<void>;
  answered?: () => void;
  messageId?: string;
  /** Answers ended before their POST's 202 was read (the worker answers at once). */
  ended: Set<string>;
}

/** Opens `n` streams, at most `concurrency` at once; each handles its events with `onEvent(i)`. */
export async function openMany(
  base: string,
  n: number,
  concurrency: number,
  onEvent?: (i: number, event: string, data: string) => void,
  extra: { onPing?: () => void; onClose?: () => void } = {},
): Promise<{ streams: OpenStream[]; failed: Record<string, number>; seconds: number }> {
  const streams: OpenStream[] = new Array<OpenStream>(n);
  const tally = new Tally();
  let next = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: Math.min(concurrency, n) }, async () => {
      while (next < n) {
        const i = next++;
        try {
          const s = await openStream(base, { onEvent: onEvent ? (e, d) => onEvent(i, e, d) : undefined, ...extra });
          streams[i] = s;
          if (!s.session) tally.add(`${s.status} ${s.code ?? ''}`);
        } catch (err) {
          tally.add(`error ${errKey(err)}`);
        }
      }
    }),
  );
  return { streams: streams.filter((s) => s?.session), failed: tally.counts, seconds: (performance.now() - t0) / 1_000 };
}

/**
 * Questions accepted (202): `concurrency` loops, each with `sessionsPerLoop` open sessions it asks
 * on in turn; a session asks again only after its answer's `done` (a question in flight would be
 * 409), which the worker sends at once. Measures POST -> 202.
 */
export async function questionLoop(base: string, o: { concurrency: number; sessionsPerLoop: number; warmupMs: number; seconds: number; window: Window }): Promise<LoopResult> {
  const sessions: AskingSession[] = [];
  const byIndex: AskingSession[] = [];
  const opened = await openMany(base, o.concurrency * o.sessionsPerLoop, 32, (i, event, data) => {
    const s = byIndex[i];
    if (!s || (event !== 'done' && event !== 'error')) return;
    let id: string | undefined;
    try {
      id = (JSON.parse(data) as { messageId?: string }).messageId;
    } catch {
      return;
    }
    if (id === undefined) return;
    if (id === s.messageId) s.answered?.();
    else s.ended.add(id);
  });
  opened.streams.forEach((stream, i) => {
    const s: AskingSession = { ...(stream.session as ChatSession), stream, idle: Promise.resolve(), ended: new Set() };
    sessions.push(s);
    byIndex[i] = s;
  });
  if (sessions.length < o.concurrency * o.sessionsPerLoop) {
    throw new Error(`question loop: only ${sessions.length} of ${o.concurrency * o.sessionsPerLoop} sessions opened (${JSON.stringify(opened.failed)})`);
  }
  const agent = new http.Agent({ keepAlive: true, maxSockets: o.concurrency });
  const lat = new Latency();
  const tally = new Tally();
  const body = JSON.stringify({ question: 'How does a dam keep a river from flooding?' });
  // Each loop asks on its own sessions in turn, so no two questions meet on one session.
  const turn = new Array<number>(o.concurrency).fill(0);
  try {
    const secs = await closedLoops(o.concurrency, o.warmupMs, o.seconds, o.window, async (measured, loop) => {
      const k = (turn[loop] = ((turn[loop] ?? 0) + 1) % o.sessionsPerLoop);
      const s = sessions[loop * o.sessionsPerLoop + k] as AskingSession;
      await Promise.race([s.idle, new Promise((r) => setTimeout(r, 10_000))]);
      const t = performance.now();
      try {
        const res = await request(`${base}/chat/sessions/${s.sessionId}/messages`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', authorization: `Bearer ${s.token}` },
          body,
          agent,
        });
        const ms = performance.now() - t;
        if (res.status === 202) {
          const id = (JSON.parse(res.body) as { messageId: string }).messageId;
          s.messageId = id;
          if (s.ended.delete(id)) s.idle = Promise.resolve();
          else s.idle = new Promise<void>((resolve) => (s.answered = resolve));
        }
        if (!measured) return;
        tally.add(res.status === 202 ? '202' : `${res.status} ${problemCode(res.body)}`);
        if (res.status === 202) lat.record(ms);
      } catch (err) {
        if (measured) tally.add(`error ${errKey(err)}`);
      }
    });
    return { ops: lat.count, perSec: lat.count / secs, latency: lat.summary(), tally: tally.counts };
  } finally {
    agent.destroy();
    for (const s of sessions) s.stream.close();
  }
}

export interface StreamingResult {
  streams: number;
  /** Tokens the worker was asked for per second (streams x rate). */
  offeredPerSec: number;
  /** Tokens that reached the clients during the window, per second. */
  relayedPerSec: number;
  tokensInWindow: number;
  /** Client arrival - the worker's hand-over to Redis: what Redis, the server and the socket added. */
  addedLatency: LatencySummary;
  /** Client arrival - the worker's schedule (includes the worker's own lateness). */
  fromSchedule: LatencySummary;
  /** Client-observed gap between consecutive tokens minus the scheduled gap. */
  gapExcess: LatencySummary;
  tokensExpected: number;
  tokensReceived: number;
  answersDone: number;
  /** Answers whose `done` came before the window ended: the offered load fell short of streams x rate. */
  endedInWindow: number;
  tally: Record<string, number>;
}

/**
 * N streams, each asks one question whose answer is `tokensPerAnswer` tokens at `tokensPerSec`
 * (the bench worker's pacing, started by the caller with the same numbers). The questions are
 * spread over one second so the tokens are too; the measured window starts 1 s after the last
 * question and lasts `seconds`, while every answer is still streaming.
 */
export async function streamingRun(base: string, o: { streams: number; tokensPerSec: number; tokensPerAnswer: number; seconds: number; window: Window }): Promise<StreamingResult> {
  const added = new Latency();
  const fromSchedule = new Latency();
  const gap = new Latency();
  const tally = new Tally();
  const last = new Array<{ arrival: number; due: number } | undefined>(o.streams);
  const doneAt = new Array<number>(o.streams).fill(0);
  // Only tokens that arrive inside the measured window count, so tokens/s is what was relayed
  // then (a server that falls behind shows its own rate), and CPU per token matches.
  let measuring = false;
  let windowEnd = Infinity;
  let inWindow = 0;
  let received = 0;
  const opened = await openMany(base, o.streams, 64, (i, event, data) => {
    if (event === 'done') {
      doneAt[i] = epochMs();
      return;
    }
    if (event !== 'token') {
      tally.add(`event ${event}`);
      return;
    }
    const arrival = epochMs();
    received++;
    let text: string;
    try {
      text = (JSON.parse(data) as { text: string }).text;
    } catch {
      tally.add('bad token event');
      return;
    }
    const [dueRaw, sentRaw] = text.split(' ');
    const due = Number(dueRaw);
    const sent = Number(sentRaw);
    const prev = last[i];
    last[i] = { arrival, due };
    if (!measuring) return;
    inWindow++;
    added.record(Math.max(0, arrival - sent));
    fromSchedule.record(Math.max(0, arrival - due));
    if (prev) gap.record(Math.max(0, arrival - prev.arrival - (due - prev.due)));
  });
  if (opened.streams.length < o.streams) throw new Error(`streaming: only ${opened.streams.length} of ${o.streams} streams opened (${JSON.stringify(opened.failed)})`);
  const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });
  const body = JSON.stringify({ question: 'stream me a long answer' });
  const t0 = performance.now();
  let measuredSeconds = o.seconds;
  try {
    await Promise.all(
      opened.streams.map(async (s, i) => {
        const at = t0 + (i * 1_000) / o.streams;
        const wait = at - performance.now();
        if (wait > 0) await new Promise((r) => setTimeout(r, wait));
        const res = await request(`${base}/chat/sessions/${s.session?.sessionId}/messages`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', authorization: `Bearer ${s.session?.token}` },
          body,
          agent,
        }).catch((err: unknown) => ({ status: 0, body: errKey(err) }));
        tally.add(res.status === 202 ? 'post 202' : `post ${res.status} ${problemCode(res.body)}`);
      }),
    );
    await new Promise((r) => setTimeout(r, 1_000));
    const t1 = performance.now();
    measuring = true;
    o.window.start();
    await new Promise((r) => setTimeout(r, o.seconds * 1_000));
    measuring = false;
    o.window.stop();
    windowEnd = epochMs();
    measuredSeconds = (performance.now() - t1) / 1_000;
    // Every answer ends by itself: wait (bounded) for the last `done`.
    const answerMs = (o.tokensPerAnswer / o.tokensPerSec) * 1_000;
    const until = performance.now() + answerMs + 10_000;
    while (doneAt.some((d, i) => d === 0 && opened.streams[i]) && performance.now() < until) await new Promise((r) => setTimeout(r, 100));
  } finally {
    agent.destroy();
    for (const s of opened.streams) s.close();
  }
  return {
    streams: opened.streams.length,
    offeredPerSec: o.streams * o.tokensPerSec,
    relayedPerSec: inWindow / measuredSeconds,
    tokensInWindow: inWindow,
    addedLatency: added.summary(),
    fromSchedule: fromSchedule.summary(),
    gapExcess: gap.summary(),
    tokensExpected: o.streams * o.tokensPerAnswer,
    tokensReceived: received,
    answersDone: doneAt.filter((d) => d > 0).length,
    endedInWindow: doneAt.filter((d) => d > 0 && d < windowEnd).length,
    tally: tally.counts,
  };
}

export type ConnectMode = 'plain' | 'tls-full' | 'tls-resumed';

export interface ConnectResult extends LoopResult {
  /** Share of TLS connections that resumed a session. */
  resumedShare: number;
}

/**
 * New connections, each with one small request the edge answers itself, then closed by the
 * server (Connection: close). `tls-resumed` offers the session of the loop's previous connection.
 */
export async function connectLoop(
  host: string,
  port: number,
  o: { mode: ConnectMode; maxVersion: 'TLSv1.2' | 'TLSv1.3'; ca?: string; path: string; concurrency: number; warmupMs: number; seconds: number; window: Window },
): Promise<ConnectResult> {
  const lat = new Latency();
  const tally = new Tally();
  let resumed = 0;
  let tlsCount = 0;
  const payload = `GET ${o.path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n`;
  // Per loop: the session of its previous connection.
  const sessions: Array<Buffer | undefined> = [];
  const one = (id: number): Promise<{ status: string; reused: boolean }> =>
    new Promise((resolve, reject) => {
      let head = '';
      let reused = false;
      const sock: net.Socket =
        o.mode === 'plain'
          ? net.connect({ host, port }, () => sock.write(payload))
          : tls.connect({ host, port, ca: o.ca, maxVersion: o.maxVersion, minVersion: o.maxVersion, session: o.mode === 'tls-resumed' ? sessions[id] : undefined, ALPNProtocols: ['http/1.1'] }, () => {
              reused = (sock as tls.TLSSocket).isSessionReused();
              sock.write(payload);
            });
      if (o.mode === 'tls-resumed') sock.on('session', (s: Buffer) => (sessions[id] = s));
      sock.setTimeout(10_000, () => sock.destroy(new Error('timeout')));
      sock.on('data', (c: Buffer) => {
        if (head.length < 64) head += c.toString('latin1');
      });
      sock.on('error', reject);
      sock.on('close', () => resolve({ status: head.split(' ')[1] ?? '0', reused }));
    });
  const secs = await closedLoops(o.concurrency, o.warmupMs, o.seconds, o.window, async (measured, loop) => {
    const t = performance.now();
    try {
      const r = await one(loop);
      if (!measured) return;
      lat.record(performance.now() - t);
      tally.add(r.status);
      if (o.mode !== 'plain') {
        tlsCount++;
        if (r.reused) resumed++;
      }
    } catch (err) {
      if (measured) tally.add(`error ${errKey(err)}`);
    }
  });
  return { ops: lat.count, perSec: lat.count / secs, latency: lat.summary(), tally: tally.counts, resumedShare: tlsCount ? resumed / tlsCount : 0 };
}
