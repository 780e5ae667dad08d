// The chat lifecycle for k6: open the SSE stream -> `session` event -> POST a question with the
// session's token -> read the streamed answer to `done` -> close. The scenario files in
// ../scenarios are the same ones the built-in runner (npm run loadtest) executes.
//
// k6 has no SSE client of its own: run these with a k6 that includes the xk6-sse extension
// (see loadtest/README.md).
import { check, sleep } from 'k6';
import crypto from 'k6/crypto';
import encoding from 'k6/encoding';
import exec from 'k6/execution';
import http from 'k6/http';
import { Counter, Trend } from 'k6/metrics';
import type { Options } from 'k6/options';
// eslint-disable-next-line @nx/enforce-module-boundaries -- built into a k6 binary with xk6-sse, not an npm package
import sse from 'k6/x/sse';
import { scaleScenarios, type ScenarioFile } from '../src/scenario-scale.ts';

export const BASE_URL = __ENV['BASE_URL'] ?? 'http://127.0.0.1:8080';
const JWT_SECRET = __ENV['JWT_SECRET'];
const QUESTION = __ENV['QUESTION'] ?? 'How does a dam keep a river from flooding?';
/** Longest Retry-After a refused VU honours, seconds. */
const RETRY_AFTER_MAX_S = Number(__ENV['RETRY_AFTER_MAX_S'] ?? 60);
/** Deadlines, ms: past them the iteration counts as status 0 (no answer). */
const SESSION_DEADLINE_MS = Number(__ENV['SESSION_DEADLINE_MS'] ?? 10_000);
const FIRST_TOKEN_DEADLINE_MS = Number(__ENV['FIRST_TOKEN_DEADLINE_MS'] ?? 30_000);
const DONE_DEADLINE_MS = Number(__ENV['DONE_DEADLINE_MS'] ?? 60_000);

const session = new Trend('chat_session', true);
const post = new Trend('chat_post', true);
const ttft = new Trend('chat_ttft', true);
const answer = new Trend('chat_answer', true);
const refusal = new Trend('chat_refusal', true);
const completed = new Counter('chat_completed');
/** Every 429/503 answer, tagged with its status and whether the stream or the question got it. */
const refused = new Counter('chat_refused');
const status0 = new Counter('chat_status_0');
const errors = new Counter('chat_errors');

/** k6 options from a scenario file, with TIME_SCALE and VUS_SCALE applied (both default 1). */
export function optionsFrom(fileText: string): Options {
  const file = JSON.parse(fileText) as ScenarioFile;
  const scale = { time: Number(__ENV['TIME_SCALE'] ?? 1), vus: Number(__ENV['VUS_SCALE'] ?? 1) };
  return {
    scenarios: scaleScenarios(file.scenarios, scale) as Options['scenarios'],
    summaryTrendStats: ['avg', 'min', 'med', 'p(90)', 'p(95)', 'p(99)', 'max'],
  };
}

function b64url(s: string): string {
  return encoding.b64encode(s, 'rawurl');
}

/** An HS256 JWT with `sub` = the user, when JWT_SECRET is set (the gateway's AUTH_JWT_SECRET). */
function authFor(user: string): Record<string, string> {
  if (!JWT_SECRET) return {};
  const now = Math.floor(Date.now() / 1000);
  const head = `${b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }))}.${b64url(JSON.stringify({ sub: user, iat: now, exp: now + 6 * 3600 }))}`;
  return { Authorization: `Bearer ${head}.${crypto.hmac('sha256', JWT_SECRET, head, 'base64rawurl')}` };
}

function retryAfterS(headers: Record<string, string>): number {
  const v = Number(headers['Retry-After'] ?? headers['retry-after'] ?? 1);
  return Math.min(Number.isFinite(v) ? v : 1, RETRY_AFTER_MAX_S);
}

/** One lifecycle for `user`; returns the seconds to wait before the next one (Retry-After). */
export function lifecycle(user: string, retry: boolean): number {
  const t0 = Date.now();
  let tPost = 0;
  let firstToken = 0;
  // Set inside the stream's callbacks, which TypeScript's narrowing does not see.
  let outcome = 'open' as 'completed' | 'refused' | 'error' | 'status0' | 'open';
  let wait = 0;
  let opened: { sessionId: string; token: string } | null = null;
  const res = sse.open(`${BASE_URL}/chat/stream`, { method: 'GET', headers: { Accept: 'text/event-stream', ...authFor(user) } }, (client) => {
    client.on('event', (e) => {
      const now = Date.now();
      // Deadlines are checked on every event; the extension has no timer of its own.
      if ((!tPost && now - t0 > SESSION_DEADLINE_MS) || (tPost && !firstToken && now - tPost > FIRST_TOKEN_DEADLINE_MS) || (tPost && now - tPost > DONE_DEADLINE_MS)) {
        outcome = 'status0';
        client.close();
        return;
      }
      switch (e.name) {
        case 'session': {
          session.add(now - t0);
          const s = JSON.parse(e.data) as { sessionId: string; token: string };
          opened = s;
          const firstPost = Date.now();
          // A refused question (429/503) is asked again on the same stream after Retry-After
          // (bounded), until the first-token deadline; an abuser does not wait.
          for (;;) {
            tPost = Date.now();
            const r = http.post(`${BASE_URL}/chat/sessions/${s.sessionId}/messages`, JSON.stringify({ question: QUESTION }), {
              headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${s.token}` },
              timeout: '10s',
              tags: { name: 'POST /chat/sessions/{id}/messages' },
            });
            post.add(r.timings.duration);
            if (r.status === 202) break;
            if (r.status !== 429 && r.status !== 503) {
              outcome = r.status === 0 ? 'status0' : 'error';
              client.close();
              return;
            }
            refusal.add(Date.now() - tPost);
            refused.add(1, { status: String(r.status), on: 'post' });
            const w = retryAfterS(r.headers);
            if (!retry || Date.now() + w * 1000 - firstPost > FIRST_TOKEN_DEADLINE_MS) {
              outcome = 'refused';
              wait = w;
              client.close();
              return;
            }
            sleep(w);
          }
          break;
        }
        case 'token':
          if (!firstToken) {
            firstToken = Date.now();
            ttft.add(firstToken - tPost);
          }
          break;
        case 'done':
          answer.add(Date.now() - tPost);
          outcome = 'completed';
          client.close();
          break;
        case 'failed':
        case 'expired':
          outcome = 'error';
          client.close();
          break;
        default:
          break;
      }
    });
    client.on('error', () => {
      if (outcome === 'open') outcome = 'status0';
    });
  });
  // Done with the session: a stream that only drops keeps its slot for the resume window (SSE_RESUME_MS).
  const done = opened as { sessionId: string; token: string } | null;
  if (done) {
    http.del(`${BASE_URL}/chat/sessions/${done.sessionId}`, null, {
      headers: { Authorization: `Bearer ${done.token}` },
      timeout: '10s',
      tags: { name: 'DELETE /chat/sessions/{id}' },
    });
  }
  if (res.status === 429 || res.status === 503) {
    refusal.add(Date.now() - t0);
    refused.add(1, { status: String(res.status), on: 'stream' });
    outcome = 'refused';
    wait = retryAfterS(res.headers);
  } else if (res.status === 0 || (res.status === 200 && outcome === 'open')) {
    outcome = 'status0';
  } else if (res.status !== 200) {
    outcome = 'error';
  }
  check(res, { 'stream admitted or refused fast (200/429/503)': (r) => r.status === 200 || r.status === 429 || r.status === 503 });
  switch (outcome) {
    case 'completed':
      completed.add(1);
      break;
    case 'refused':
      break;
    case 'status0':
    case 'open':
      status0.add(1);
      break;
    case 'error':
      errors.add(1);
      break;
  }
  return wait;
}

/** A closed-model user: one lifecycle, then its Retry-After if refused. Own identity per VU. */
export function userIteration(): void {
  const wait = lifecycle(`k6-${exec.scenario.name}-vu${exec.vu.idInTest}`, true);
  if (wait > 0) sleep(wait);
}

/** An abuser iteration (open model): the iterations belong to USERS users in turn; no waiting. */
export function abuserIteration(): void {
  const users = Number(__ENV['USERS'] ?? 5);
  lifecycle(`k6-${exec.scenario.name}-user${exec.scenario.iterationInTest % users}`, false);
}
