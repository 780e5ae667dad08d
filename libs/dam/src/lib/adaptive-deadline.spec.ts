import { AdaptiveDeadline } from './adaptive-deadline';

describe('AdaptiveDeadline', () => {
  it('starts at the floor and stays there while Redis answers faster', () => {
    const d = new AdaptiveDeadline(50, 1_000);
    expect(d.currentMs).toBe(50);
    for (let i = 0; i < 50; i++) d.observe(1);
    expect(d.currentMs).toBe(50);
  });

  it('rises with slow replies, up to the cap, and comes back down when they are fast again', () => {
    const d = new AdaptiveDeadline(50, 1_000);
    for (let i = 0; i < 5; i++) d.observe(200);
    const loaded = d.currentMs;
    expect(loaded).toBeGreaterThanOrEqual(200);
    for (let i = 0; i < 20; i++) d.observe(5_000);
    expect(d.currentMs).toBe(1_000);
    for (let i = 0; i < 200; i++) d.observe(2);
    expect(d.currentMs).toBe(50);
  });

  it('measures a call the request gave up on, when it completes', async () => {
    let t = 0;
    const d = new AdaptiveDeadline(10, 1_000, () => t);
    let finish!: (v: string) => void;
    const call = new Promise<string>((r) => (finish = r));
    const waited = d.run(call);
    await expect(waited).rejects.toThrow(/did not answer within 10 ms/);
    t = 400;
    finish('late');
    await call;
    expect(d.currentMs).toBeGreaterThanOrEqual(400);
  });
});
