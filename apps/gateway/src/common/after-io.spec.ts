import { afterIo } from './after-io';

describe('afterIo', () => {
  it('runs what was queued this turn once the turn is over, in order, and not before', async () => {
    const ran: string[] = [];
    afterIo(() => ran.push('a'));
    afterIo(() => ran.push('b'));
    expect(ran).toEqual([]);
    await new Promise<void>((r) => process.nextTick(() => (ran.push('tick'), r())));
    expect(ran).toEqual(['tick']);
    await new Promise((r) => setImmediate(r));
    expect(ran).toEqual(['tick', 'a', 'b']);
  });

  it('queued while the queue runs: runs in the next turn', async () => {
    const ran: string[] = [];
    afterIo(() => {
      ran.push('first');
      afterIo(() => ran.push('later'));
    });
    await new Promise((r) => setImmediate(r));
    expect(ran).toEqual(['first']);
    await new Promise((r) => setImmediate(r));
    expect(ran).toEqual(['first', 'later']);
  });
});
