import { WAIT_DEFAULT_MS, waitFor } from './wait';

describe('waitFor', () => {
  it('returns the first truthy value of the check', async () => {
    let n = 0;
    await expect(waitFor('counter reaches 3', () => (++n >= 3 ? { n } : null), { pollMs: 1 })).resolves.toEqual({ n: 3 });
  });

  it('counts a check that throws as not yet', async () => {
    let n = 0;
    const v = await waitFor(
      'third time lucky',
      () => {
        if (++n < 3) throw new Error('not yet');
        return 'ok';
      },
      { pollMs: 1 },
    );
    expect(v).toBe('ok');
  });

  it('fails with the label, the deadline, the last value and the detail', async () => {
    await expect(waitFor('the queue drains', () => 0, { timeoutMs: 30, pollMs: 5, detail: () => ({ depth: 7 }) })).rejects.toThrow(
      /^the queue drains: not true within 30 ms \(\d+ checks; last value: 0\); \{ depth: 7 \}$/,
    );
  });

  it('names the last error when the check threw', async () => {
    await expect(
      waitFor(
        'Redis answers',
        () => {
          throw new Error('ECONNREFUSED');
        },
        { timeoutMs: 20, pollMs: 5 },
      ),
    ).rejects.toThrow(/last check threw: Error: ECONNREFUSED/);
  });

  it('waits for a promise under the same deadline, and passes its rejection through', async () => {
    await expect(waitFor('settles', new Promise((r) => setTimeout(r, 5, 'done')))).resolves.toBe('done');
    await expect(waitFor('never settles', new Promise(() => undefined), { timeoutMs: 20 })).rejects.toThrow(
      'never settles: not settled within 20 ms',
    );
    await expect(waitFor('rejects', Promise.reject(new Error('boom')))).rejects.toThrow('boom');
  });

  it('accepts a bare deadline in ms, and has a generous default', async () => {
    await expect(waitFor('never', () => false, 20)).rejects.toThrow('never: not true within 20 ms');
    expect(WAIT_DEFAULT_MS).toBeGreaterThanOrEqual(30_000);
  });
});
