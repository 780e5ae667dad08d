// The demo page: one session over SSE or Socket.IO, a question, the answer as it streams, the
// dam's state from /dam, and refusals with their code and a countdown. No framework, no CDN.
const $ = (id) => document.getElementById(id);
const ui = {
  connectForm: $('connect-form'), askForm: $('ask-form'), open: $('open'), close: $('close'), ask: $('ask'),
  jwt: $('jwt'), question: $('question'), status: $('status'), sessionInfo: $('session-info'),
  answer: $('answer'), answerMeta: $('answer-meta'),
  refusal: $('refusal'), noRefusal: $('no-refusal'), refusalCode: $('refusal-code'), refusalStatus: $('refusal-status'),
  refusalDetail: $('refusal-detail'), refusalCountdown: $('refusal-countdown'),
  damGlobal: $('dam-global'), damLive: $('dam-live'), damInstance: $('dam-instance'), damWait: $('dam-wait'),
  damAi: $('dam-ai'), damBreaker: $('dam-breaker'), damInstances: $('dam-instances'),
};

/** What the page holds of the current session. */
const state = { transport: 'sse', session: null, conn: null, messageId: null, seqs: [] };

function setStatus(text) {
  ui.status.textContent = text;
  document.body.dataset.status = text.split(' ')[0];
}

function connected(session) {
  state.session = session;
  ui.sessionInfo.textContent = `${session.sessionId} on ${session.instanceId}`;
  ui.ask.disabled = false;
  ui.close.disabled = false;
  ui.open.disabled = true;
  setStatus('open');
}

/** No session on the page any more. `keepStream`: its EventSource lives on (after `expired` it reconnects once, by itself). */
function disconnected(text, keepStream = false) {
  state.session = null;
  if (!keepStream) state.conn = null;
  ui.ask.disabled = true;
  ui.close.disabled = true;
  ui.open.disabled = false;
  setStatus(text);
}

// ---- refusals: code, detail and a countdown from Retry-After ----
let countdownTimer = null;
function showRefusal(problem) {
  ui.refusal.hidden = false;
  ui.noRefusal.hidden = true;
  ui.refusalCode.textContent = problem.code ?? 'refused';
  ui.refusalStatus.textContent = String(problem.status ?? '');
  ui.refusalDetail.textContent = problem.detail ?? problem.title ?? '';
  // Counted down from a deadline, not by ticks: a throttled background tab stays right.
  const until = Date.now() + (problem.retryAfterMs ?? 0);
  const tick = () => {
    const left = Math.max(0, Math.ceil((until - Date.now()) / 1000));
    ui.refusalCountdown.textContent = String(left);
    if (left === 0) clearInterval(countdownTimer);
  };
  clearInterval(countdownTimer);
  tick();
  countdownTimer = setInterval(tick, 250);
  document.body.dataset.refused = problem.code ?? 'refused';
}

async function problemOf(res) {
  let body = {};
  try {
    body = await res.json();
  } catch {
    body = { title: res.statusText };
  }
  const retry = Number(res.headers.get('Retry-After'));
  return { status: res.status, ...body, retryAfterMs: Number.isFinite(retry) ? retry * 1000 : body.retryAfterMs };
}

// ---- the answer ----
// An answer's first events can come before the POST's 202 (or the ask's ack) that names it: the
// stream and the POST are two connections. They are kept until their messageId is known.
const early = new Map();

function keepEarly(kind, e) {
  if (!early.has(e.messageId) && early.size >= 4) early.clear();
  const kept = early.get(e.messageId) ?? [];
  kept.push([kind, e]);
  early.set(e.messageId, kept);
}

function answerStarted(messageId) {
  state.messageId = messageId;
  state.seqs = [];
  ui.answer.textContent = '';
  ui.answerMeta.textContent = `${messageId}: waiting for the first token`;
  document.body.dataset.answer = 'streaming';
  const kept = early.get(messageId) ?? [];
  early.clear();
  for (const [kind, e] of kept) ({ token: onToken, done: onDone, failed: onFailed })[kind](e);
}

function onToken(t) {
  if (t.messageId !== state.messageId) return keepEarly('token', t);
  if (state.seqs.includes(t.seq)) return; // a resumed stream never repeats, but be safe
  state.seqs.push(t.seq);
  ui.answer.textContent += t.text;
  ui.answerMeta.textContent = `${t.messageId}: ${state.seqs.length} tokens`;
}

function onDone(d) {
  if (d.messageId !== state.messageId) return keepEarly('done', d);
  ui.answerMeta.textContent = `${d.messageId}: done, ${d.tokens} tokens`;
  document.body.dataset.answer = 'done';
  window.tdDemo.answers.push({ messageId: d.messageId, tokens: d.tokens, seqs: [...state.seqs], text: ui.answer.textContent });
}

function onFailed(f) {
  if (f.messageId !== state.messageId) return keepEarly('failed', f);
  ui.answerMeta.textContent = `${f.messageId}: ${f.code}: ${f.message}`;
  document.body.dataset.answer = 'failed';
}

// EventSource reconnects by itself: after idle or lifetime the server answers 204 (it stops for
// good); after draining it gets a new session on another instance (the `session` event again).
function onExpired(e) {
  disconnected(`ended (${e.reason})`, true);
}

// ---- SSE ----
async function streamTicket(jwt) {
  const res = await fetch('/chat/tickets', { method: 'POST', headers: { Authorization: `Bearer ${jwt}` } });
  if (res.status !== 201 && res.status !== 200) throw await problemOf(res);
  return (await res.json()).ticket;
}

// A dropped stream comes back by itself: EventSource reconnects (after the server's `retry:`, 1 s)
// with the id of the last event it has (Last-Event-ID), and the server resumes the same session
// with the events it missed. The URL's ticket is spent by then; the event id is what proves it.
async function openSse() {
  state.conn?.close();
  const url = new URL('/chat/stream', location.origin);
  // Refusals arrive as one `refused` event the page can read, instead of an opaque error.
  url.searchParams.set('refusal', 'event');
  const jwt = ui.jwt.value.trim();
  if (jwt) url.searchParams.set('ticket', await streamTicket(jwt));
  const es = new EventSource(url);
  state.conn = { close: () => es.close(), es };
  // Events of an EventSource the page has since replaced are not this page's any more.
  const mine = () => state.conn?.es === es;
  const on = (name, fn) =>
    es.addEventListener(name, (e) => {
      if (!mine()) return;
      const data = JSON.parse(e.data);
      window.tdDemo.events.push({ event: name, id: e.lastEventId, data });
      fn(data);
    });
  on('session', connected);
  on('token', onToken);
  on('done', onDone);
  on('failed', onFailed);
  on('expired', onExpired);
  on('refused', (p) => {
    es.close();
    showRefusal(p);
    disconnected('refused');
  });
  let opens = 0;
  es.onopen = () => {
    if (!mine()) return;
    opens++;
    window.tdDemo.opens++;
    if (opens > 1 && state.session) setStatus('open (resumed)');
  };
  es.onerror = () => {
    if (!mine()) return;
    if (es.readyState === EventSource.CLOSED) {
      // Refused, or the server said the session is over (204): EventSource stops for good.
      if (state.session || ui.status.textContent.startsWith('connecting')) disconnected('closed');
      else state.conn = null;
    } else if (state.session) {
      setStatus('reconnecting');
    }
  };
}

async function askSse(question) {
  const s = state.session;
  const res = await fetch(`/chat/sessions/${s.sessionId}/messages`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${s.token}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ question }),
  });
  if (res.status !== 202) throw await problemOf(res);
  return (await res.json()).messageId;
}

async function closeSse() {
  const s = state.session;
  state.conn?.close();
  state.conn = null;
  if (s) await fetch(`/chat/sessions/${s.sessionId}`, { method: 'DELETE', headers: { Authorization: `Bearer ${s.token}` } });
  disconnected('closed');
}

// ---- Socket.IO (its client is served by the gateway itself: nothing from a CDN) ----
function loadSocketIoClient() {
  if (window.io) return Promise.resolve(window.io);
  return new Promise((resolve, reject) => {
    const s = document.createElement('script');
    s.src = '/socket.io/socket.io.min.js';
    s.onload = () => resolve(window.io);
    s.onerror = () => reject({ code: 'socketio_unavailable', detail: 'The Socket.IO client could not be loaded.' });
    document.head.append(s);
  });
}

async function openSocketIo() {
  const io = await loadSocketIoClient();
  const jwt = ui.jwt.value.trim();
  const socket = io('/chat', { transports: ['websocket'], reconnection: false, auth: jwt ? { token: jwt } : {} });
  state.conn = { close: () => socket.disconnect(), socket };
  const on = (name, fn) => socket.on(name, (d) => { window.tdDemo.events.push({ event: name, data: d }); fn(d); });
  on('session', connected);
  on('token', onToken);
  on('done', onDone);
  on('failed', onFailed);
  on('expired', onExpired);
  socket.on('connect_error', (err) => {
    showRefusal({ code: err.data?.code ?? 'connect_error', detail: err.data?.detail ?? err.message, ...err.data });
    disconnected('refused');
  });
  socket.on('disconnect', () => { if (state.session) disconnected('closed'); });
}

function askSocketIo(question) {
  return new Promise((resolve, reject) => {
    state.conn.socket.timeout(10_000).emit('ask', { question }, (err, ack) => {
      if (err) return reject({ code: 'timeout', detail: 'No acknowledgement within 10 s.' });
      if (ack && ack.messageId) return resolve(ack.messageId);
      reject(ack ?? { code: 'unknown' });
    });
  });
}

// ---- wiring ----
ui.connectForm.addEventListener('submit', async (e) => {
  e.preventDefault();
  state.transport = new FormData(ui.connectForm).get('transport');
  setStatus('connecting');
  try {
    if (state.transport === 'socketio') await openSocketIo();
    else await openSse();
  } catch (p) {
    showRefusal(p);
    disconnected('refused');
  }
});

ui.close.addEventListener('click', async () => {
  if (state.transport === 'socketio') {
    state.conn?.close();
    disconnected('closed');
  } else {
    await closeSse();
  }
});

ui.askForm.addEventListener('submit', async (e) => {
  e.preventDefault();
  const question = ui.question.value.trim();
  if (!question || !state.session) return;
  ui.ask.disabled = true;
  try {
    const messageId = state.transport === 'socketio' ? await askSocketIo(question) : await askSse(question);
    answerStarted(messageId);
  } catch (p) {
    showRefusal(p);
  } finally {
    ui.ask.disabled = !state.session;
  }
});

// ---- the dam, polled once a second ----
const instancesSeen = new Map();
async function pollDam() {
  try {
    const res = await fetch('/dam', { cache: 'no-store' });
    if (!res.ok) return;
    const d = await res.json();
    const g = d.global;
    ui.damGlobal.textContent = g ? `${g.used} / ${g.capacity}${g.stale ? ' (stale)' : ''}` : `${d.held} / ${d.ceiling} (this instance; Redis away)`;
    ui.damLive.textContent = g ? String(g.live) : '–';
    ui.damInstance.textContent = d.instanceId;
    if (d.ai) {
      const wait = d.ai.estimatedWaitMs;
      const limit = d.ai.maxWaitMs > 0 ? ` (limit ${(d.ai.maxWaitMs / 1000).toFixed(1)} s)` : ' (no limit)';
      ui.damWait.textContent = wait === null || wait < 0 ? `unknown${limit}` : `${(wait / 1000).toFixed(1)} s${limit}`;
      ui.damAi.textContent = `${d.ai.liveWorkers} / ${d.ai.ratePerSec.toFixed(1)}`;
      ui.damBreaker.textContent = d.ai.breaker;
    }
    instancesSeen.set(d.instanceId, { held: d.held, ceiling: d.ceiling, at: Date.now() });
    const rows = [...instancesSeen].map(([id, v]) => {
      const tr = document.createElement('tr');
      for (const cell of [id, v.held, v.ceiling, `${Math.round((Date.now() - v.at) / 1000)} s ago`]) {
        const td = document.createElement('td');
        td.textContent = String(cell);
        tr.append(td);
      }
      return tr;
    });
    ui.damInstances.replaceChildren(...rows);
    document.body.dataset.dam = 'live';
  } catch {
    // The next poll tries again.
  }
}

// What the browser test reads; harmless for a person.
window.tdDemo = { events: [], answers: [], opens: 0, state };
setInterval(pollDam, 1000);
void pollDam();
