import { requestedWaitMs } from './waiting-room';

describe('requestedWaitMs', () => {
  it('reads ?wait= and Prefer: wait= in seconds; the query wins', () => {
    expect(requestedWaitMs('30', undefined)).toBe(30_000);
    expect(requestedWaitMs(undefined, 'wait=30')).toBe(30_000);
    expect(requestedWaitMs(undefined, 'respond-async, wait=2.5')).toBe(2_500);
    expect(requestedWaitMs(undefined, ['handling=lenient', 'wait="10"'])).toBe(10_000);
    expect(requestedWaitMs('5', 'wait=30')).toBe(5_000);
  });

  it('is no wait when absent or not a number, and at most an hour', () => {
    expect(requestedWaitMs(undefined, undefined)).toBe(0);
    expect(requestedWaitMs('soon', undefined)).toBe(0);
    expect(requestedWaitMs('-3', undefined)).toBe(0);
    expect(requestedWaitMs(['1', '2'], undefined)).toBe(0);
    expect(requestedWaitMs(undefined, 'waitress=3')).toBe(0);
    expect(requestedWaitMs('999999', undefined)).toBe(3_600_000);
  });
});
