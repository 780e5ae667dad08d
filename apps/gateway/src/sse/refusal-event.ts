import type { Response } from 'express';
import { toProblem, toSocketProblem, writeRendered, type RenderedResponse } from '../common/errors';
import { SSE_HEADERS, sseEvent } from './sse';

/** The query flag by which a client asks to read a refused stream: GET /chat/stream?refusal=event. */
export const REFUSAL_AS_EVENT = 'event';

/**
 * An EventSource cannot read a refused response (any status but 200 only fires `error`), so a
 * client that asks for it gets the refusal inside a stream: 200, one `event: refused` with the
 * problem and retryAfterMs, then the end. `retry:` is the Retry-After, so EventSource itself comes
 * back no sooner; a refusal that waiting does not fix carries `id: end` instead, and the reconnect
 * with that Last-Event-ID is answered 204, which stops EventSource for good.
 */
export function renderRefusalEvent(err: unknown): RenderedResponse {
  const { headers } = toProblem(err);
  return { status: 200, headers: { ...headers, ...SSE_HEADERS }, body: refusalEvent(err) };
}

export function sendRefusalEvent(res: Response, err: unknown): void {
  writeRendered(res, renderRefusalEvent(err));
}

/** A stream already open (it waited in the line) that ends refused: the same event, then the end. */
export function endWithRefusalEvent(res: Response, err: unknown): void {
  if (!res.writableEnded && !res.destroyed) res.end(refusalEvent(err));
}

function refusalEvent(err: unknown): string {
  const problem = toSocketProblem(err);
  const head = problem.retryAfterMs !== undefined ? `retry: ${problem.retryAfterMs}
` : `id: ${FINAL_EVENT_ID}
`;
  return `${head}${sseEvent('refused', problem)}`;
}

/** The id of a refusal that waiting does not fix: its reconnect gets 204. */
export const FINAL_EVENT_ID = 'end';
