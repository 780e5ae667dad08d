import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { Server } from 'socket.io';
import type { ScenarioFile } from '../scenario-scale';
import { Runner } from './runner';

type Mode = 'ok' | 'full' | 'overloaded-once';

/**
 * A stand-in for the gateways' Socket.IO namespace /chat (session event, ask acknowledged, tokens,
 * done) that can refuse connects or questions, so the runner's counting over Socket.IO can be
 * checked against what it did. The runner is the component under test.
 */
async function socketServer(mode: Mode): Promise<{ url: string; connects: () => number; asks: () => number; close: () => Promise<void> }> {
  let connects = 0;
  let asks = 0;
  const httpServer = http.createServer();
  const io = new Server(httpServer, { transports: ['websocket'] });
  const chat = io.of('/chat');
  chat.use((_socket, next) => {
    connects++;
    if (mode === 'full') next(Object.assign(new Error('full'), { data: { code: 'dam_full', status: 429, retryAfterMs: 1_000 } }));
    else next();
  });
  chat.on('connection', (socket) => {
    let refused = false;
    socket.emit('session', { sessionId: socket.id, token: 't', instanceId: 'x', expiresAt: 0 });
    socket.on('ask', (_q: unknown, ack: (r: unknown) => void) => {
      asks++;
      if (mode === 'overloaded-once' && !refused) {
        refused = true;
        ack({ code: 'ai_overloaded', status: 503, retryAfterMs: 1_000 });
        return;
      }
      ack({ messageId: 'm' });
      setTimeout(() => {
        socket.emit('token', { messageId: 'm', seq: 0, text: 'a' });
        setTimeout(() => socket.emit('done', { messageId: 'm', tokens: 1 }), 20);
      }, 30);
    });
  });
  await new Promise<void>((r) => httpServer.listen(0, '127.0.0.1', r));
  const port = (httpServer.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    connects: () => connects,
    asks: () => asks,
    close: () => new Promise<void>((r) => void io.close(() => r())),
  };
}

function file(scenarios: ScenarioFile['scenarios']): ScenarioFile {
  return { name: 't', title: 't', description: '', seedBefore: '', scenarios };
}

describe('the load runner over Socket.IO', () => {
  it('runs the lifecycle in a loop and counts every answer once', async () => {
    const srv = await socketServer('ok');
    try {
      const r = await new Runner({
        baseUrl: srv.url,
        transport: 'socketio',
        file: file({ a: { executor: 'constant-vus', vus: 5, duration: '2s', gracefulStop: '2s', tags: { role: 'user' } } }),
      }).run();
      const u = r.roles['user'];
      expect(r.transport).toBe('socketio');
      expect(u?.outcomes.completed).toBeGreaterThan(10);
      expect(u?.outcomes.completed).toBe(srv.asks());
      expect(u?.status0).toBe(0);
      expect(u?.statuses).toMatchObject({ 'stream 200': srv.connects(), 'post 202': srv.asks(), 'answer done': srv.asks() });
    } finally {
      await srv.close();
    }
  });

  it('a refused connect waits its retryAfterMs before trying again', async () => {
    const srv = await socketServer('full');
    try {
      const r = await new Runner({
        baseUrl: srv.url,
        transport: 'socketio',
        file: file({ a: { executor: 'constant-vus', vus: 3, duration: '2500ms', gracefulStop: '2s', tags: { role: 'user' } } }),
      }).run();
      // 1 s apart: each VU tries at 0, ~1 and ~2 s, not hundreds of times.
      expect(srv.connects()).toBeGreaterThanOrEqual(6);
      expect(srv.connects()).toBeLessThanOrEqual(9);
      expect(r.roles['user']?.refused429).toBe(srv.connects());
      expect(r.roles['user']?.statuses).toEqual({ 'stream 429 dam_full': srv.connects() });
    } finally {
      await srv.close();
    }
  });

  it('a refused ask is asked again on the same socket after retryAfterMs, then answered', async () => {
    const srv = await socketServer('overloaded-once');
    try {
      const r = await new Runner({
        baseUrl: srv.url,
        transport: 'socketio',
        file: file({ a: { executor: 'constant-vus', vus: 2, duration: '1s', gracefulStop: '3s', tags: { role: 'user' } } }),
      }).run();
      const u = r.roles['user'];
      expect(u?.refused503).toBe(srv.connects());
      expect(u?.outcomes.completed).toBe(srv.connects());
      expect(u?.latency.iteration.min).toBeGreaterThanOrEqual(1_000);
    } finally {
      await srv.close();
    }
  });
});
