import { EventEmitter } from 'node:events';
import { whenReady } from './when-ready';

class FakeConnection extends EventEmitter {
  status = 'connecting';

  ready(): void {
    this.status = 'ready';
    this.emit('ready');
  }
}

afterEach(() => {
  jest.useRealTimers();
});

describe('whenReady', () => {
  it('resolves at once for a ready connection', async () => {
    const conn = new FakeConnection();
    conn.status = 'ready';
    await whenReady(conn, 60_000);
    expect(conn.listenerCount('ready')).toBe(0);
  });

  it('resolves when the connection gets ready, and leaves no listener or timer behind', async () => {
    jest.useFakeTimers();
    const conn = new FakeConnection();
    let resolved = false;
    const p = whenReady(conn, 60_000).then(() => (resolved = true));
    await Promise.resolve();
    expect(resolved).toBe(false);
    conn.ready();
    await p;
    expect(conn.listenerCount('ready')).toBe(0);
    expect(jest.getTimerCount()).toBe(0);
  });

  it('gives up after the timeout without rejecting, and stops listening', async () => {
    jest.useFakeTimers();
    const conn = new FakeConnection();
    const p = whenReady(conn, 3_000);
    jest.advanceTimersByTime(3_000);
    await expect(p).resolves.toBeUndefined();
    expect(conn.listenerCount('ready')).toBe(0);
    expect(conn.status).toBe('connecting');
  });
});
