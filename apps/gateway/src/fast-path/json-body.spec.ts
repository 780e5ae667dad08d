import { IncomingMessage, ServerResponse } from 'node:http';
import { Socket } from 'node:net';
import { loadConfig } from '../common/config/config';
import { jsonBodyParser } from '../sse/json-body.interceptor';
import { isPlainJson, readPlainJson, type BodyOutcome } from './json-body';

const LIMIT = 16_384;

function request(body: Buffer, headers: Record<string, string>): IncomingMessage {
  const req = new IncomingMessage(new Socket());
  req.headers = { 'content-length': String(body.length), ...headers };
  req.method = 'POST';
  if (body.length > 0) req.push(body);
  req.push(null);
  return req;
}

/** body-parser itself, as the framework runs it: the outcome to match. */
function framework(body: Buffer, headers: Record<string, string>): Promise<BodyOutcome> {
  const parse = jsonBodyParser(loadConfig({ BODY_MAX_BYTES: String(LIMIT) }));
  const req = request(body, headers);
  return new Promise((resolve) => {
    void parse(req as never, new ServerResponse(req) as never, (err?: unknown) => {
      const e = err as { type?: string; status?: number; message?: string } | undefined;
      resolve(e ? { ok: false, error: { type: e.type ?? '', status: e.status ?? 0, message: e.message ?? '' } } : { ok: true, body: (req as { body?: unknown }).body });
    });
  });
}

function lean(body: Buffer, headers: Record<string, string>): Promise<BodyOutcome | null> {
  return new Promise((resolve) => {
    const req = request(body, headers);
    if (isPlainJson(req, LIMIT)) readPlainJson(req, resolve);
    else resolve(null);
  });
}

const JSON_TYPE = { 'content-type': 'application/json' };

describe('readPlainJson', () => {
  it.each([
    ['a question', '{"question":"hi"}'],
    ['unicode', '{"question":"안녕하세요 👋"}'],
    ['a BOM', '\ufeff{"question":"hi"}'],
    ['whitespace first', ' \n\t{"question":"hi"}'],
    ['an array', '[1,2]'],
    ['empty', ''],
    ['only whitespace', '   '],
    ['a string', '"hi"'],
    ['a number', '42'],
    ['null', 'null'],
    ['cut short', '{"question":'],
    ['trailing garbage', '{"question":"hi"} x'],
    ['invalid UTF-8', Buffer.from([0x7b, 0x22, 0x71, 0x22, 0x3a, 0x22, 0xff, 0xfe, 0x22, 0x7d])],
  ])('gives what body-parser gives for %s', async (_what, raw) => {
    const body = Buffer.isBuffer(raw) ? raw : Buffer.from(raw, 'utf8');
    const want = await framework(body, JSON_TYPE);
    const got = await lean(body, JSON_TYPE);
    if (want.ok) expect(got).toEqual(want);
    else expect(got).toMatchObject({ ok: false, error: { type: want.error.type, status: want.error.status } });
  });

  it('reads the content types body-parser decodes as UTF-8', async () => {
    for (const type of ['application/json', 'Application/JSON', 'application/json; charset=utf-8', 'application/json;charset=UTF-8', 'application/json; charset="utf-8"']) {
      const body = Buffer.from('{"question":"hi"}');
      expect(await lean(body, { 'content-type': type })).toEqual(await framework(body, { 'content-type': type }));
    }
  });

  it('leaves to body-parser what it does not read itself', async () => {
    const body = Buffer.from('{"question":"hi"}');
    for (const headers of <Array<Record<string, string>>>[
      { 'content-type': 'application/json; charset=utf-16le' },
      { 'content-type': 'application/json; charset=latin1' },
      { 'content-type': 'application/json; foo=bar' },
      { 'content-type': 'application/vnd.api+json' },
      { 'content-type': 'application/json', 'content-encoding': 'gzip' },
      { 'content-type': 'application/json', 'transfer-encoding': 'chunked' },
      { 'content-type': 'application/json', 'content-length': String(LIMIT + 1) },
    ]) {
      expect(await lean(body, headers)).toBeNull();
    }
  });
});
