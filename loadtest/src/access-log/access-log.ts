import { percentile } from '@traffic-dam/stack';

/**
 * Reads the stack's nginx access log (infra/nginx/nginx.conf.template, format `main`) to show where
 * slow answers waited: at the edge, or for the gateway's response headers (`uht`).
 */

export type RequestKind = 'stream' | 'question' | 'other';

export interface AccessEntry {
  kind: RequestKind;
  method: string;
  status: number;
  /** When nginx started reading the request, epoch ms. */
  startMs: number;
  /** nginx's $request_time, ms (for a stream: its whole life). */
  totalMs: number;
  /** Time to the gateway's response headers, ms (the last upstream tried); null if none answered. */
  headersMs: number | null;
}

const LINE = /"(\S+) (\S+) [^"]*" (\d{3}) \d+ rt=([\d.]+) .*?\buht=(.+?) end=([\d.]+)/;

function kindOf(method: string, path: string): RequestKind {
  const p = path.split('?')[0] ?? path;
  if (method === 'GET' && p === '/chat/stream') return 'stream';
  if (method === 'POST' && /^\/chat\/sessions\/[^/]+\/messages$/.test(p)) return 'question';
  return 'other';
}

/** One line of the `main` format, or null for a line of another format. */
export function parseAccessLine(line: string): AccessEntry | null {
  const m = LINE.exec(line);
  if (!m) return null;
  const [, method = '', path = '', status = '0', rt = '0', uht = '-', end = '0'] = m;
  // With retries nginx lists every upstream tried ("0.004, 0.010"); the last one answered.
  const lastUht = uht.split(',').pop()?.trim() ?? '-';
  const headers = lastUht === '-' || lastUht === '' ? null : Number(lastUht) * 1000;
  const totalMs = Number(rt) * 1000;
  return {
    kind: kindOf(method, path),
    method,
    status: Number(status),
    startMs: Number(end) * 1000 - totalMs,
    totalMs,
    headersMs: headers !== null && Number.isFinite(headers) ? headers : null,
  };
}

export interface SecondRow {
  /** Whole seconds since the start (see bySecond), by the request's arrival. */
  second: number;
  kind: RequestKind;
  count: number;
  statuses: Record<string, number>;
  headersP50: number | null;
  headersP99: number | null;
  headersMax: number | null;
}

/**
 * Per second of arrival and kind: how many, their statuses, and the gateway's time to headers.
 * Seconds count from fromMs (say a scenario's start; earlier entries are left out), else from the
 * first entry.
 */
export function bySecond(entries: AccessEntry[], fromMs?: number, kinds: RequestKind[] = ['stream', 'question']): SecondRow[] {
  const picked = entries.filter((e) => kinds.includes(e.kind) && (fromMs === undefined || e.startMs >= fromMs));
  if (picked.length === 0) return [];
  const t0 = fromMs ?? Math.min(...picked.map((e) => e.startMs));
  const groups = new Map<string, AccessEntry[]>();
  for (const e of picked) {
    const key = `${Math.floor((e.startMs - t0) / 1000)}|${e.kind}`;
    const g = groups.get(key);
    if (g) g.push(e);
    else groups.set(key, [e]);
  }
  const rows: SecondRow[] = [];
  for (const [key, g] of groups) {
    const [sec = '0', kind = 'other'] = key.split('|');
    const statuses: Record<string, number> = {};
    for (const e of g) statuses[e.status] = (statuses[e.status] ?? 0) + 1;
    const h = g.map((e) => e.headersMs).filter((v): v is number => v !== null);
    rows.push({
      second: Number(sec),
      kind: kind as RequestKind,
      count: g.length,
      statuses,
      headersP50: h.length ? percentile(h, 50) : null,
      headersP99: h.length ? percentile(h, 99) : null,
      headersMax: h.length ? percentile(h, 100) : null,
    });
  }
  return rows.sort((a, b) => a.second - b.second || a.kind.localeCompare(b.kind));
}
