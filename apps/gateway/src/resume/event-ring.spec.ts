import type { SessionEvent } from '../sessions/session-events';
import { EventRing } from './event-ring';
import { formatEventId, newResumeHandle, parseEventId } from './resume-id';

const token = (id: number): SessionEvent => ({ id, name: 'token', data: { messageId: 'm', seq: id - 2, text: `t${id}` } });

describe('EventRing', () => {
  it('gives the events after an id, oldest first, and nothing after the newest', () => {
    const r = new EventRing(8);
    for (let i = 1; i <= 5; i++) r.push(token(i));
    expect(r.since(2)?.map((e) => e.id)).toEqual([3, 4, 5]);
    expect(r.since(0)?.map((e) => e.id)).toEqual([1, 2, 3, 4, 5]);
    expect(r.since(5)).toEqual([]);
    expect(r.lastId).toBe(5);
  });

  it('keeps only the last `capacity` events, and says so (null) when a resume would miss some', () => {
    const r = new EventRing(4);
    for (let i = 1; i <= 10; i++) r.push(token(i));
    expect(r.since(6)?.map((e) => e.id)).toEqual([7, 8, 9, 10]);
    expect(r.since(5)).toBeNull();
    // An id the session never sent is no resume point either.
    expect(r.since(11)).toBeNull();
  });

  it('has nothing to replay while empty', () => {
    const r = new EventRing(4);
    expect(r.since(0)).toEqual([]);
    expect(r.since(1)).toBeNull();
  });
});

describe('resumable event ids', () => {
  it('round-trip handle and number, and reject anything else', () => {
    const h = newResumeHandle();
    expect(h).toMatch(/^[A-Za-z0-9_-]{22}$/);
    expect(parseEventId(formatEventId(h, 42))).toEqual({ handle: h, after: 42 });
    for (const bad of [undefined, '', 'end', '42', `${h}.`, `${h}.x`, `${h}x.1`, `${h}.1.2`]) expect(parseEventId(bad)).toBeNull();
  });
});
