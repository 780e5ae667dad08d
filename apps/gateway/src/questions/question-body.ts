import { ErrorCode, GatewayException } from '../common/errors';

/** Session ids are UUIDs we minted; anything else cannot be a session. */
export const SESSION_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** Checks the POST body: {"question": "<1..maxChars characters>"} and nothing else. */
export function parseQuestionBody(body: unknown, maxChars: number): string {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw new GatewayException(ErrorCode.BadRequest, 'The body must be a JSON object: {"question": "..."}.');
  }
  const extra = Object.keys(body).filter((k) => k !== 'question');
  if (extra.length > 0) {
    throw new GatewayException(ErrorCode.BadRequest, `Unknown field(s): ${extra.slice(0, 5).join(', ')}.`);
  }
  const q = (body as { question?: unknown }).question;
  if (q === undefined) throw new GatewayException(ErrorCode.BadRequest, 'The field "question" is missing.');
  if (typeof q !== 'string') throw new GatewayException(ErrorCode.BadRequest, 'The field "question" must be a string.');
  if (q.trim().length === 0) throw new GatewayException(ErrorCode.BadRequest, 'The question is empty.');
  // Characters as a person counts them: code points, not UTF-16 units.
  let chars = 0;
  for (const _ of q) {
    if (++chars > maxChars) {
      throw new GatewayException(ErrorCode.QuestionTooLarge, `The question is over ${maxChars} characters.`);
    }
  }
  return q;
}

/** The token of an `Authorization: Bearer <token>` header, or null. */
export function parseBearer(header: string | undefined): string | null {
  if (header === undefined) return null;
  const m = /^Bearer[ ]+([A-Za-z0-9._~+/=-]+)\s*$/i.exec(header);
  return m ? m[1]! : null;
}
