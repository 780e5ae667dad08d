import { RedisDeadlineError, withDeadline } from './deadline';

describe('withDeadline', () => {
  it('resolves with the value when it comes in time', async () => {
    await expect(withDeadline(Promise.resolve(7), 50)).resolves.toBe(7);
  });

  it('rejects with RedisDeadlineError when it does not', async () => {
    const never = new Promise<number>(() => undefined);
    await expect(withDeadline(never, 5)).rejects.toBeInstanceOf(RedisDeadlineError);
  });

  it('passes the original rejection through unchanged', async () => {
    const reason = { notAnError: true };
    await expect(withDeadline(Promise.reject(reason), 50)).rejects.toBe(reason);
  });
});
