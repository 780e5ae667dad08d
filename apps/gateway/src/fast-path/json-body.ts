import type { IncomingMessage } from 'node:http';

/** What reading a JSON body gave: the parsed value, or the error the framework's parser gives (its type and status). */
export type BodyOutcome = { ok: true; body: unknown } | { ok: false; error: { type: string; status: number; message: string } };

// application/json, with no parameter or with charset=utf-8 only: what the lean reader decodes.
const PLAIN_JSON = /^application\/json[ \t]*(?:;[ \t]*charset="?utf-8"?[ \t]*)?$/i;
// RFC 7159 whitespace (space, tab, LF, CR), as body-parser skips it.
const FIRST_NON_WHITESPACE = /^[ \t\n\r]*([^ \t\n\r]|$)/;

/**
 * The common body read without body-parser's machinery (content-type and charset parsing, a
 * decoder, an async scope per read): identity encoding, a Content-Length within the limit, plain
 * application/json in UTF-8 (isPlainJson). Anything else body-parser reads. The outcome is
 * body-parser's in strict mode (its BOM strip, `{}` for an empty body, `{` or `[` first), which
 * json-body.spec.ts checks against body-parser itself.
 */
export function isPlainJson(req: IncomingMessage, limit: number): boolean {
  const h = req.headers;
  const encoding = h['content-encoding'];
  if (encoding !== undefined && encoding.toLowerCase() !== 'identity') return false;
  const type = h['content-type'];
  if (type === undefined || !PLAIN_JSON.test(type)) return false;
  const raw = h['content-length'];
  return raw !== undefined && h['transfer-encoding'] === undefined && /^\d{1,9}$/.test(raw) && Number(raw) <= limit;
}

/** Reads a body isPlainJson() accepted. */
export function readPlainJson(req: IncomingMessage, done: (o: BodyOutcome) => void): void {
  const chunks: Buffer[] = [];
  let finished = false;
  const finish = (o: BodyOutcome): void => {
    if (finished) return;
    finished = true;
    done(o);
  };
  req.on('data', (c: Buffer) => chunks.push(c));
  req.once('end', () => finish(parseStrict(chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks))));
  req.once('aborted', () => finish({ ok: false, error: { type: 'request.aborted', status: 400, message: 'request aborted' } }));
  req.once('error', (err) => finish({ ok: false, error: { type: 'request.aborted', status: 400, message: err.message } }));
}

function parseStrict(buf: Buffer): BodyOutcome {
  let text = buf.toString('utf8');
  if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
  if (text.length === 0) return { ok: true, body: {} };
  const first = FIRST_NON_WHITESPACE.exec(text)?.[1];
  if (first !== '{' && first !== '[') return parseFailed('strict violation');
  try {
    return { ok: true, body: JSON.parse(text) as unknown };
  } catch (err) {
    return parseFailed(err instanceof Error ? err.message : String(err));
  }
}

function parseFailed(message: string): BodyOutcome {
  return { ok: false, error: { type: 'entity.parse.failed', status: 400, message } };
}
