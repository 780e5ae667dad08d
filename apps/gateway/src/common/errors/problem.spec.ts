import { NotFoundException } from '@nestjs/common';
import { ErrorCode } from './error-code';
import { GatewayException } from './gateway.exception';
import { toProblem } from './problem';
import { renderProblem } from './send-problem';

describe('toProblem', () => {
  it('maps a gateway exception to its status, code and headers', () => {
    const p = toProblem(new GatewayException(ErrorCode.QuestionInFlight, 'wait', { retryAfterSec: 0.2 }));
    expect(p.status).toBe(409);
    expect(p.body.code).toBe('question_in_flight');
    expect(p.body.type).toContain('question_in_flight');
    expect(p.headers['Retry-After']).toBe('1');
  });

  it('asks for a bearer token on 401 and 403', () => {
    expect(toProblem(new GatewayException(ErrorCode.MissingToken, 'x')).headers['WWW-Authenticate']).toBe('Bearer');
    expect(toProblem(new GatewayException(ErrorCode.InvalidToken, 'x')).status).toBe(403);
  });

  it('maps body-parser errors', () => {
    expect(toProblem({ type: 'entity.parse.failed', status: 400 }).body.code).toBe('bad_json');
    expect(toProblem({ type: 'entity.too.large', status: 413 }).status).toBe(413);
  });

  it('maps unknown routes and hides unexpected errors', () => {
    expect(toProblem(new NotFoundException()).body.code).toBe('not_found');
    const p = toProblem(new Error('secret detail'));
    expect(p.status).toBe(500);
    expect(p.body.detail).not.toContain('secret');
  });
});

describe('renderProblem', () => {
  it('is the problem body with the request as its instance, last', () => {
    const p = toProblem(new GatewayException(ErrorCode.DamFull, 'full', { retryAfterSec: 2 }));
    for (const url of ['/chat/stream', '/chat/stream?q="x"&y=\u2028']) {
      const r = renderProblem(p, url);
      expect(r.body).toBe(JSON.stringify({ ...p.body, instance: url }));
      expect(r.headers).toEqual({ 'Retry-After': '2', 'Content-Type': 'application/problem+json; charset=utf-8' });
    }
    // Another detail of the same code is another body.
    expect(JSON.parse(renderProblem(toProblem(new GatewayException(ErrorCode.DamFull, 'other')), '/').body)).toMatchObject({ detail: 'other', instance: '/' });
  });
});
