import { EventEmitter } from 'node:events';
import type { Socket } from 'socket.io';
import { SocketConnection } from './socket-connection';

/**
 * The engine.io side as SocketConnection sees it: the connection emits `flush` before it writes
 * frames to the TCP socket, which records what it was asked (cork, a frame, uncork) in order.
 */
function fakeSocket(): { socket: Socket; conn: EventEmitter; log: string[]; emit: (name: string) => void } {
  const log: string[] = [];
  let corks = 0;
  const raw = {
    destroyed: false,
    cork: () => {
      corks++;
      log.push('cork');
    },
    uncork: () => {
      corks--;
      log.push('uncork');
    },
  };
  const conn = Object.assign(new EventEmitter(), { request: { socket: raw } });
  // engine.io: every packet flushes (a flush event, then the frame) while the transport is writable.
  const emit = (name: string): void => {
    conn.emit('flush');
    log.push(corks > 0 ? `${name} (corked)` : name);
  };
  const socket = Object.assign(new EventEmitter(), { conn, connected: true, data: {}, emit: (name: string) => (emit(name), true) });
  return { socket: socket as unknown as Socket, conn, log, emit };
}

const nextTurn = (): Promise<void> => new Promise((r) => setImmediate(r));

describe('SocketConnection corks its TCP socket for the turn', () => {
  it('the frames of one turn are written while corked, uncorked once when the turn is over', async () => {
    const f = fakeSocket();
    const c = new SocketConnection(f.socket);
    for (let seq = 0; seq < 3; seq++) c.send({ id: seq + 1, name: 'token', data: { messageId: 'm', seq, text: 'x' } });
    expect(f.log).toEqual(['cork', 'token (corked)', 'token (corked)', 'token (corked)']);
    await nextTurn();
    expect(f.log.slice(4)).toEqual(['uncork']);
    // A later turn corks again.
    c.send({ id: 4, name: 'done', data: { messageId: 'm', tokens: 3 } });
    await nextTurn();
    expect(f.log.slice(5)).toEqual(['cork', 'done (corked)', 'uncork']);
  });

  it('leaves a destroyed socket alone', () => {
    const f = fakeSocket();
    (f.socket.conn.request as unknown as { socket: { destroyed: boolean } }).socket.destroyed = true;
    const c = new SocketConnection(f.socket);
    c.send({ id: 1, name: 'token', data: { messageId: 'm', seq: 0, text: 'x' } });
    expect(f.log).toEqual(['token']);
  });
});
