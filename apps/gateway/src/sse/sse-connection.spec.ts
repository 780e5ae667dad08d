import { EventEmitter } from 'node:events';
import type { Request, Response } from 'express';
import { createParser, type EventSourceMessage } from 'eventsource-parser';
import type { SessionEvent } from '../sessions/session-events';
import { SseConnection, type SsePinger } from './sse-connection';

/** What the connection writes to, recorded: each write() call is one chunk to the socket. */
class RecordedResponse extends EventEmitter {
  writes: string[] = [];
  writableEnded = false;
  destroyed = false;
  writableLength = 0;
  status(): this {
    return this;
  }
  headers: Record<string, string> = {};
  setHeader(k: string, v: string): void {
    this.headers[k] = v;
  }
  flushHeaders(): void {
    this.writes.length = 0;
  }
  write(chunk: string): boolean {
    this.writes.push(chunk);
    return true;
  }
  end(): void {
    this.writableEnded = true;
  }
  destroy(): void {
    this.destroyed = true;
  }
}

const pinger = { add: () => undefined, remove: () => undefined } as unknown as SsePinger;
const req = { socket: { setKeepAlive: () => undefined } } as unknown as Request;
const nextTurn = (): Promise<void> => new Promise((r) => setImmediate(r));

function open(): { res: RecordedResponse; conn: SseConnection } {
  const res = new RecordedResponse();
  const conn = new SseConnection(req, res as unknown as Response, pinger);
  conn.open();
  return { res, conn };
}

const token = (seq: number): SessionEvent => ({ id: seq + 1, name: 'token', data: { messageId: 'm', seq, text: `t${seq} ` } }) as SessionEvent;

function parse(chunks: string[]): EventSourceMessage[] {
  const got: EventSourceMessage[] = [];
  const parser = createParser({ onEvent: (e) => got.push(e) });
  for (const c of chunks) parser.feed(c);
  return got;
}

describe('SseConnection writes once per event-loop turn', () => {
  it('the events of one turn are one chunk, in order, each its own SSE event', async () => {
    const { res, conn } = open();
    for (let seq = 0; seq < 5; seq++) expect(conn.send(token(seq))).toBe(true);
    expect(res.writes).toEqual([]);
    await nextTurn();
    expect(res.writes).toHaveLength(1);
    const events = parse(res.writes);
    expect(events.map((e) => e.event)).toEqual(['token', 'token', 'token', 'token', 'token']);
    expect(events.map((e) => (JSON.parse(e.data) as { seq: number }).seq)).toEqual([0, 1, 2, 3, 4]);
    conn.send(token(5));
    await nextTurn();
    expect(res.writes).toHaveLength(2);
  });

  it('end() writes what the turn holds before it ends the response', () => {
    const { res, conn } = open();
    conn.send(token(0));
    conn.send({ id: 2, name: 'expired', data: { reason: 'idle' } } as SessionEvent);
    conn.end();
    expect(res.writableEnded).toBe(true);
    expect(parse(res.writes).map((e) => e.event)).toEqual(['token', 'expired']);
  });

  it('nothing is written to a response that is gone, and a client that reads nothing is cut off', async () => {
    const gone = open();
    gone.conn.send(token(0));
    gone.res.destroyed = true;
    await nextTurn();
    expect(gone.res.writes).toEqual([]);
    expect(gone.conn.send(token(1))).toBe(false);

    const stuck = open();
    stuck.res.writableLength = 512 * 1024 + 1;
    expect(stuck.conn.send(token(0))).toBe(false);
    expect(stuck.res.destroyed).toBe(true);
    await nextTurn();
    expect(stuck.res.writes).toEqual([]);
  });
});
