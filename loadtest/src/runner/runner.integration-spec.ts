import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ensureLocalCertificate } from '@traffic-dam/stack';
import type { ScenarioFile } from '../scenario-scale';
import { waitFor } from '@traffic-dam/stack';
import { Runner, assertLoopback } from './runner';

type Mode = 'ok' | 'full' | 'silent' | 'overloaded-once' | 'waiting';

/**
 * A stand-in for the load balancer that speaks the chat contract (SSE session, POST 202, tokens,
 * done) and can refuse or go silent, so the runner's counting can be checked against what it
 * did. The runner is the component under test; this server only plays its counterpart.
 */
function chatServer(mode: Mode, tls?: { cert: Buffer; key: Buffer }): Promise<{ url: string; streams: () => number; posts: () => number; close: () => Promise<void> }> {
  let streams = 0;
  let posts = 0;
  const refusedOnce = new Set<string>();
  const open = new Map<string, http.ServerResponse>();
  const handler = (req: http.IncomingMessage, res: http.ServerResponse): void => {
    if (req.method === 'GET' && mode === 'waiting' && req.url === '/chat/stream?wait=30') {
      // Every stream waits in line first: told place 3 and 150 ms, admitted 150 ms later.
      streams++;
      const id = `s${streams}`;
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write(`event: queued\ndata: ${JSON.stringify({ position: 3, etaMs: 150 })}\n\n`);
      setTimeout(() => res.write(`event: session\ndata: ${JSON.stringify({ sessionId: id, token: 't', instanceId: 'x', expiresAt: 0 })}\n\n`), 150);
      open.set(id, res);
      req.on('close', () => open.delete(id));
      return;
    }
    if (req.method === 'GET' && req.url === '/chat/stream') {
      streams++;
      if (mode === 'full') {
        res.writeHead(429, { 'content-type': 'application/problem+json', 'retry-after': '1' });
        res.end(JSON.stringify({ status: 429, code: 'dam_full' }));
        return;
      }
      if (mode === 'silent') return; // never answers: the client's deadline must end it
      const id = `s${streams}`;
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write(`event: session\ndata: ${JSON.stringify({ sessionId: id, token: 't', instanceId: 'x', expiresAt: 0 })}\n\n`);
      open.set(id, res);
      req.on('close', () => open.delete(id));
      return;
    }
    const m = /^\/chat\/sessions\/([^/]+)\/messages$/.exec(req.url ?? '');
    if (req.method === 'POST' && m) {
      posts++;
      req.resume();
      const id = m[1] as string;
      if (mode === 'overloaded-once' && !refusedOnce.has(id)) {
        refusedOnce.add(id);
        res.writeHead(503, { 'content-type': 'application/problem+json', 'retry-after': '1' });
        res.end(JSON.stringify({ status: 503, code: 'ai_overloaded' }));
        return;
      }
      res.writeHead(202, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ messageId: 'm' }));
      const stream = open.get(id);
      if (mode === 'waiting' && req.headers['prefer'] === 'wait=30') stream?.write(`event: queued\ndata: ${JSON.stringify({ messageId: 'm', position: 2, etaMs: 40 })}\n\n`);
      setTimeout(() => {
        stream?.write(`event: token\ndata: ${JSON.stringify({ messageId: 'm', seq: 0, text: 'a' })}\n\n`);
        setTimeout(() => stream?.write(`event: done\ndata: ${JSON.stringify({ messageId: 'm', tokens: 1 })}\n\n`), 20);
      }, 30);
      return;
    }
    res.writeHead(404).end();
  };
  const server = tls ? https.createServer(tls, handler) : http.createServer(handler);
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      const port = (server.address() as AddressInfo).port;
      resolve({
        url: `${tls ? 'https' : 'http'}://127.0.0.1:${port}`,
        streams: () => streams,
        posts: () => posts,
        close: () =>
          new Promise<void>((r) => {
            server.closeAllConnections();
            server.close(() => r());
          }),
      });
    });
  });
}

function file(scenarios: ScenarioFile['scenarios']): ScenarioFile {
  return { name: 't', title: 't', description: '', seedBefore: '', scenarios };
}

describe('the load runner against a chat server', () => {
  it('only targets loopback', () => {
    expect(() => assertLoopback('http://10.0.0.1:8080')).toThrow(/127\.0\.0\.1/);
    expect(assertLoopback('http://[::1]:8080').hostname).toBe('[::1]');
    expect(assertLoopback('https://127.0.0.1:8443').protocol).toBe('https:');
    expect(() => assertLoopback('ftp://127.0.0.1:21')).toThrow(/http:\/\/ and https:\/\//);
  });

  it('runs over HTTPS trusting the given CA; without it nothing is answered, with --insecure it is', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'td-runner-tls-'));
    const cert = await ensureLocalCertificate(join(dir, 'tls'));
    const srv = await chatServer('ok', { cert: readFileSync(cert.certFile), key: readFileSync(cert.keyFile) });
    const scenario = file({ a: { executor: 'constant-vus', vus: 2, duration: '1s', gracefulStop: '2s', tags: { role: 'user' } } });
    try {
      const trusted = await new Runner({ baseUrl: srv.url, tls: { ca: cert.ca }, file: scenario }).run();
      expect(trusted.roles['user']?.outcomes.completed).toBeGreaterThan(3);
      expect(trusted.roles['user']?.status0).toBe(0);
      const untrusted = await new Runner({ baseUrl: srv.url, file: scenario }).run();
      expect(untrusted.roles['user']?.outcomes.completed).toBe(0);
      expect(untrusted.roles['user']?.status0).toBeGreaterThan(0);
      const insecure = await new Runner({ baseUrl: srv.url, tls: { insecure: true }, file: scenario }).run();
      expect(insecure.roles['user']?.outcomes.completed).toBeGreaterThan(3);
    } finally {
      await srv.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('constant VUs run the lifecycle in a loop; every answer is counted once, per second too', async () => {
    const srv = await chatServer('ok');
    try {
      const r = await new Runner({ baseUrl: srv.url, file: file({ a: { executor: 'constant-vus', vus: 5, duration: '2s', gracefulStop: '2s', tags: { role: 'user' } } }) }).run();
      const u = r.roles['user'];
      expect(u?.outcomes.completed).toBeGreaterThan(20);
      expect(u?.outcomes.completed).toBe(srv.posts());
      expect(u?.status0).toBe(0);
      expect(r.seconds.reduce((n, s) => n + s.completed, 0)).toBe(u?.outcomes.completed);
      expect(r.peakVus).toBe(5);
      expect(u?.latency.ttft.p50).toBeGreaterThanOrEqual(25);
    } finally {
      await srv.close();
    }
  });

  it('a server that never answers is status 0 at the session deadline, not a hang', async () => {
    const srv = await chatServer('silent');
    try {
      // A hang would never end: a generous deadline on the run, not a figure for how long it took.
      const r = await waitFor(
        'the run over a silent server ends',
        new Runner({
          baseUrl: srv.url,
          deadlines: { sessionMs: 500 },
          file: file({ a: { executor: 'constant-vus', vus: 2, duration: '1s', gracefulStop: '2s', tags: { role: 'user' } } }),
        }).run(),
      );
      expect(r.roles['user']?.status0).toBeGreaterThanOrEqual(2);
      expect(r.roles['user']?.outcomes.completed).toBe(0);
      expect(Object.keys(r.roles['user']?.statuses ?? {})).toEqual(['0 stream headers_timeout']);
    } finally {
      await srv.close();
    }
  });

  it('a refused stream waits its Retry-After before trying again', async () => {
    const srv = await chatServer('full');
    try {
      const r = await new Runner({ baseUrl: srv.url, file: file({ a: { executor: 'constant-vus', vus: 3, duration: '2500ms', gracefulStop: '2s', tags: { role: 'user' } } }) }).run();
      // Retry-After 1 s: each VU tries at 0, ~1 and ~2 s, not hundreds of times.
      expect(srv.streams()).toBeGreaterThanOrEqual(6);
      expect(srv.streams()).toBeLessThanOrEqual(9);
      expect(r.roles['user']?.refused429).toBe(srv.streams());
      expect(r.roles['user']?.statuses).toEqual({ 'stream 429 dam_full': srv.streams() });
    } finally {
      await srv.close();
    }
  });

  it('a refused question is asked again on the same stream after Retry-After, then answered', async () => {
    const srv = await chatServer('overloaded-once');
    try {
      const r = await new Runner({ baseUrl: srv.url, file: file({ a: { executor: 'constant-vus', vus: 2, duration: '1s', gracefulStop: '3s', tags: { role: 'user' } } }) }).run();
      const u = r.roles['user'];
      expect(u?.refused503).toBe(srv.streams());
      expect(u?.outcomes.completed).toBe(srv.streams());
      expect(u?.latency.iteration.min).toBeGreaterThanOrEqual(1_000);
    } finally {
      await srv.close();
    }
  });

  it('a waiting client offers its wait (?wait=, Prefer: wait=) and records each wait from its first queued event with the place and ETA it was told', async () => {
    const srv = await chatServer('waiting');
    try {
      const r = await new Runner({ baseUrl: srv.url, waitSec: 30, file: file({ a: { executor: 'constant-vus', vus: 2, duration: '1s', gracefulStop: '3s', tags: { role: 'user' } } }) }).run();
      const u = r.roles['user'];
      expect(u?.outcomes.completed).toBe(srv.streams());
      expect(r.waitSec).toBe(30);
      expect(r.waits?.sessions).toHaveLength(srv.streams());
      expect(r.waits?.questions).toHaveLength(srv.posts());
      for (const w of r.waits?.sessions ?? []) expect(w).toMatchObject({ position: 3, etaMs: 150 });
      for (const w of r.waits?.questions ?? []) expect(w).toMatchObject({ position: 2, etaMs: 40 });
      // The session came after the queued event (the stand-in's 150 ms), the first token after the question's.
      expect(Math.min(...(r.waits?.sessions ?? []).map((w) => w.waitedMs))).toBeGreaterThan(0);
      expect(r.seconds.reduce((n, s) => n + (s.queuedSessions ?? 0), 0)).toBe(srv.streams());
      expect(r.seconds.reduce((n, s) => n + (s.queuedQuestions ?? 0), 0)).toBe(srv.posts());
    } finally {
      await srv.close();
    }
  });

  it('a ramp meets its stage targets and ends at 0; an arrival rate fires on schedule and drops past maxVUs', async () => {
    const srv = await chatServer('ok');
    try {
      const ramp = await new Runner({
        baseUrl: srv.url,
        file: file({ r: { executor: 'ramping-vus', startVUs: 0, stages: [{ duration: '1s', target: 8 }, { duration: '1s', target: 0 }], gracefulRampDown: '1s', tags: { role: 'user' } } }),
      }).run();
      expect(ramp.peakVus).toBe(8);
      expect(ramp.seconds[ramp.seconds.length - 1]?.vus).toBe(0);
      const rate = await new Runner({
        baseUrl: srv.url,
        file: file({ a: { executor: 'constant-arrival-rate', rate: 20, timeUnit: '1s', duration: '2s', preAllocatedVUs: 1, maxVUs: 1, env: { USERS: '2' }, tags: { role: 'abuser' } } }),
      }).run();
      const a = rate.roles['abuser'];
      // 40 due in 2 s; one VU busy ~50 ms per iteration takes about one in every two or three.
      expect((a?.iterations ?? 0) + rate.droppedIterations).toBeGreaterThanOrEqual(38);
      expect((a?.iterations ?? 0) + rate.droppedIterations).toBeLessThanOrEqual(41);
      expect(rate.droppedIterations).toBeGreaterThan(0);
    } finally {
      await srv.close();
    }
  });
});
