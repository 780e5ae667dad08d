import type { Redis } from 'ioredis';
import type { HeartbeatReply } from './budget.store';
import { Heartbeat } from './heartbeat';
import { LocalHoldings } from './local-holdings';
import { resolveDamOptions, type DamEvent, type DamOptions } from './options';

type Sent = { generation: string; held: number; okReplies: number; counts: { users: Map<string, number>; tiers: Map<number, number> } | null };

/** The budget store as a beat sees it: answers from a script, one per call, and what each call sent. */
class ScriptedStore {
  readonly sent: Sent[] = [];
  readonly replies: Array<Partial<HeartbeatReply> | Error> = [];
  deregistered = 0;

  heartbeat(generation: string, held: number, okReplies: number, _ttl: number, counts: Sent['counts']): Promise<HeartbeatReply> {
    this.sent.push({ generation, held, okReplies, counts });
    const r = this.replies.shift() ?? {};
    if (r instanceof Error) return Promise.reject(r);
    return Promise.resolve({
      status: 'ok',
      generation: 'g1',
      used: 1,
      capacity: 10,
      live: 1,
      freed: 0,
      lineLength: 0,
      now: 1_000,
      outcomes: 0,
      tickets: new Map(),
      nextExpiry: 0,
      ...r,
    });
  }

  deregister(): Promise<void> {
    this.deregistered++;
    return Promise.resolve();
  }
}

function setup(o: Partial<DamOptions> = {}, ticking = true) {
  const events: DamEvent[] = [];
  const options = resolveDamOptions({ redis: null as unknown as Redis, instanceId: 'i1', heartbeatMs: 1_000, onEvent: (e) => events.push(e), ...o });
  const store = new ScriptedStore();
  const local = new LocalHoldings(options);
  const beats = new Heartbeat(options, { store, local, line: null, ticking: () => ticking });
  return { beats, store, local, events };
}

afterEach(() => {
  jest.useRealTimers();
});

describe('Heartbeat', () => {
  it('registers on its first beat and takes the generation Redis gives', async () => {
    const { beats, store, local, events } = setup();
    local.take(null, 0, true);
    store.replies.push({ status: 'registered', generation: 'g7', used: 3, capacity: 20, live: 2 });
    expect(beats.registered).toBe(false);
    await beats.run();
    expect(store.sent[0]).toMatchObject({ generation: '', held: 1, okReplies: 0 });
    expect(beats.registered).toBe(true);
    expect(beats.generation).toBe('g7');
    expect(beats.lastGlobal).toMatchObject({ used: 3, capacity: 20, live: 2 });
    expect(events).toEqual([{ type: 'registered', generation: 'g7' }]);
    await beats.run();
    expect(store.sent[1]?.generation).toBe('g7');
  });

  it('sends the counts whole only when Redis may not have them: first beat, asked for, fenced or failed', async () => {
    const { beats, store, local } = setup({ userMaxSessions: 2 });
    local.take('u1', 0, true);
    await beats.run();
    expect(store.sent[0]?.counts).toEqual({ users: new Map([['u1', 1]]), tiers: new Map([[0, 1]]) });
    await beats.run();
    expect(store.sent[1]?.counts).toBeNull();
    // Redis lost them (need_users): the same beat asks again, with the counts.
    store.replies.push({ status: 'need_users' });
    await beats.run();
    expect(store.sent.slice(2).map((s) => s.counts !== null)).toEqual([false, true]);
    beats.countsLost();
    await beats.run();
    expect(store.sent[4]?.counts).not.toBeNull();
    beats.fenced();
    expect(beats.registered).toBe(false);
    await beats.run();
    expect(store.sent[5]?.counts).not.toBeNull();
    expect(beats.registered).toBe(true);
  });

  it('never sends counts when neither users nor tiers are counted', async () => {
    const { beats, store } = setup();
    beats.countsLost();
    await beats.run();
    expect(store.sent[0]?.counts).toBeNull();
  });

  it('reports the ok replies it was told of', async () => {
    const { beats, store } = setup();
    beats.okReply();
    beats.okReply();
    await beats.run();
    expect(store.sent[0]?.okReplies).toBe(2);
  });

  it('enters the fallback once on failing beats, keeps the latest reason, and leaves it on the next answer', async () => {
    const { beats, store, local, events } = setup();
    store.replies.push(new Error('connect ECONNREFUSED 127.0.0.1:1'), new Error('OOM command not allowed'));
    await beats.run();
    expect(beats.inFallback).toBe(true);
    expect(beats.fallbackReason).toBe('unreachable');
    const since = beats.fallbackSince;
    await beats.run();
    expect(beats.fallbackReason).toBe('oom');
    expect(beats.fallbackSince).toBe(since);
    expect(events.map((e) => e.type)).toEqual(['heartbeat_failed', 'fallback_entered', 'heartbeat_failed']);
    local.take(null, 0, true);
    await beats.run();
    expect(beats.inFallback).toBe(false);
    expect(beats.fallbackReason).toBeNull();
    expect(events.at(-1)).toMatchObject({ type: 'fallback_left', held: 1 });
  });

  it('tells of a fence with the count it re-registers with', async () => {
    const { beats, store, local, events } = setup();
    local.take(null, 0, true);
    local.take(null, 0, true);
    store.replies.push({ status: 'fenced', generation: 'g2' });
    await beats.run();
    expect(events).toEqual([{ type: 'fenced', generation: 'g2', held: 2 }]);
    expect(beats.generation).toBe('g2');
  });

  it('shares one beat between concurrent calls', async () => {
    const { beats, store } = setup();
    await Promise.all([beats.run(), beats.run(), beats.run()]);
    expect(store.sent).toHaveLength(1);
  });

  it('deregisters only when registered', async () => {
    const { beats, store } = setup();
    await beats.deregister();
    expect(store.deregistered).toBe(0);
    await beats.run();
    await beats.deregister();
    expect(store.deregistered).toBe(1);
    expect(beats.registered).toBe(false);
  });

  /** A first beat whose reply says another instance expires 300 ms later, with the timers faked. */
  async function beatBeforeExpiry(ticking = true): Promise<ReturnType<typeof setup>> {
    jest.useFakeTimers();
    const s = setup({}, ticking);
    s.store.replies.push({ now: 1_000, nextExpiry: 1_300 });
    await s.beats.run();
    return s;
  }

  it("beats again at another instance's expiry when it comes before the next beat, while the dam ticks", async () => {
    const { beats, store } = await beatBeforeExpiry();
    expect(jest.getTimerCount()).toBe(1);
    jest.advanceTimersByTime(300);
    expect(store.sent).toHaveLength(1);
    jest.advanceTimersByTime(1);
    expect(store.sent).toHaveLength(2);
    // The reap beat is under way: a call now joins it.
    await beats.run();
    expect(store.sent).toHaveLength(2);
  });

  it('stop() cancels a beat timed for an expiry', async () => {
    const { beats } = await beatBeforeExpiry();
    expect(jest.getTimerCount()).toBe(1);
    beats.stop();
    expect(jest.getTimerCount()).toBe(0);
  });

  it('times no extra beat for an expiry after the next beat, nor when the dam does not tick', async () => {
    jest.useFakeTimers();
    const late = setup();
    late.store.replies.push({ now: 1_000, nextExpiry: 2_500 });
    await late.beats.run();
    expect(jest.getTimerCount()).toBe(0);
    await beatBeforeExpiry(false);
    expect(jest.getTimerCount()).toBe(0);
  });

  it('records what a reply said of the whole budget', () => {
    const { beats } = setup();
    const seen = beats.seen({ used: 4, capacity: 8, live: 2 });
    expect(seen).toMatchObject({ used: 4, capacity: 8, live: 2 });
    expect(beats.lastGlobal).toBe(seen);
  });
});
