import { ErrorCode } from './error-code';
import { GatewayException } from './gateway.exception';
import { isExpectedRefusal } from './refusal';

describe('GatewayException', () => {
  it('captures no stack for a refusal, and keeps one for an internal error', () => {
    const refusal = new GatewayException(ErrorCode.AiOverloaded, 'Estimated wait 20 s', { retryAfterSec: 3 });
    expect(refusal.stack).toBe('GatewayException: ai_overloaded: Estimated wait 20 s');
    expect(refusal).toMatchObject({ code: 'ai_overloaded', detail: 'Estimated wait 20 s', options: { retryAfterSec: 3 } });
    expect(new GatewayException(ErrorCode.Internal, 'bug').stack).toMatch(/\n\s+at /);
    // The limit is put back: other errors keep their stacks.
    expect(new Error('other').stack).toMatch(/\n\s+at /);
  });

  it('calls every code but internal an expected refusal', () => {
    for (const code of Object.values(ErrorCode)) expect(isExpectedRefusal(code)).toBe(code !== ErrorCode.Internal);
    expect(isExpectedRefusal(undefined)).toBe(false);
  });
});
