import { LocalHoldings, type HoldingsOptions } from './local-holdings';

function holdings(o: Partial<HoldingsOptions> = {}): LocalHoldings {
  return new LocalHoldings({ instanceCeiling: 4, slotsPerInstance: 4, fallback: 'local', userMaxSessions: 0, tiers: [], ...o });
}

describe('LocalHoldings', () => {
  it('counts slots taken and given back, per tier, and forgets a tier that holds none', () => {
    const h = holdings();
    h.take(null, 0, true);
    h.take(null, 1, true);
    h.take(null, 1, true);
    expect(h.held).toBe(3);
    expect([...h.tiers]).toEqual([
      [0, 1],
      [1, 2],
    ]);
    expect(h.give(null, 0)).toBe(false);
    expect(h.held).toBe(2);
    expect([...h.tiers]).toEqual([[1, 2]]);
  });

  it('is at its ceiling when held and in-flight admits fill it, and below it once an admit is answered', () => {
    const h = holdings({ instanceCeiling: 3 });
    h.take(null, 0, true);
    h.take(null, 0, true);
    expect(h.atCeiling).toBe(false);
    h.sent();
    expect(h.atCeiling).toBe(true);
    h.answered();
    expect(h.atCeiling).toBe(false);
  });

  it('tracks users only with a per-user limit, and a waiter handed a slot is not counted twice', () => {
    expect(holdings().tracks('u1')).toBe(false);
    const h = holdings({ userMaxSessions: 2 });
    expect(h.tracks(null)).toBe(false);
    expect(h.tracks('u1')).toBe(true);
    h.waiterJoined('u1');
    h.take('u1', 0, false);
    expect(h.counts().users).toEqual(new Map([['u1', 1]]));
    h.take('u1', 0, true);
    expect(h.counts().users).toEqual(new Map([['u1', 2]]));
    expect(h.give('u1', 0)).toBe(true);
    expect(h.give('u1', 0)).toBe(true);
    expect(h.counts().users).toEqual(new Map());
  });

  it('gives the heartbeat copies of its counts, not the live maps', () => {
    const h = holdings({ userMaxSessions: 1 });
    h.take('u1', 0, true);
    const sent = h.counts();
    h.take('u2', 1, true);
    expect(sent).toEqual({ users: new Map([['u1', 1]]), tiers: new Map([[0, 1]]) });
    expect(h.counts()).toEqual({
      users: new Map([
        ['u1', 1],
        ['u2', 1],
      ]),
      tiers: new Map([
        [0, 1],
        [1, 1],
      ]),
    });
  });

  it('a waiter that leaves without a slot no longer counts for its user', () => {
    const h = holdings({ userMaxSessions: 1, fallback: 'admit' });
    h.waiterJoined('u1');
    expect(h.decideLocally('u1', 0)).toBe('user_sessions');
    h.waiterGone('u1');
    expect(h.decideLocally('u1', 0)).toBeNull();
    expect(h.held).toBe(0);
  });

  it('counts shadow sessions apart from the slots', () => {
    const h = holdings();
    h.shadowAdmitted();
    h.shadowAdmitted();
    h.shadowReleased();
    expect(h.unbudgeted).toBe(1);
    expect(h.held).toBe(0);
  });

  describe('decideLocally', () => {
    it("'local' admits up to the share, counting admits in flight", () => {
      const h = holdings({ slotsPerInstance: 2, instanceCeiling: 10 });
      h.take(null, 0, true);
      expect(h.decideLocally(null, 0)).toBeNull();
      h.sent();
      expect(h.decideLocally(null, 0)).toBe('dam_full');
      h.answered();
      h.take(null, 0, true);
      expect(h.decideLocally(null, 0)).toBe('dam_full');
    });

    it("'reject' refuses everything and 'admit' lets in past the share", () => {
      expect(holdings({ fallback: 'reject' }).decideLocally(null, 0)).toBe('redis_unavailable');
      const h = holdings({ fallback: 'admit', slotsPerInstance: 1 });
      for (let i = 0; i < 3; i++) h.take(null, 0, true);
      expect(h.decideLocally(null, 0)).toBeNull();
    });

    it("keeps the unused part of a higher tier's reserved share free from lower tiers", () => {
      // 10 slots, tier 0 keeps 30%: 3 slots a lower tier may not take while tier 0 leaves them unused.
      const tiers = [
        { name: 'gold', reservedShare: 0.3 },
        { name: 'free', reservedShare: 0 },
      ];
      const h = holdings({ slotsPerInstance: 10, instanceCeiling: 10, tiers });
      for (let i = 0; i < 6; i++) h.take(null, 1, true);
      expect(h.decideLocally(null, 1)).toBeNull();
      h.take(null, 1, true);
      expect(h.decideLocally(null, 1)).toBe('dam_full');
      // The top tier gets the slots kept for it.
      expect(h.decideLocally(null, 0)).toBeNull();
      // Tier 0 using one of its reserved slots leaves two kept: still none for the lower tier.
      h.take(null, 0, true);
      expect(h.decideLocally(null, 1)).toBe('dam_full');
      // Once tier 0 uses its whole reserve, nothing is kept and only the budget bounds.
      h.take(null, 0, true);
      h.take(null, 0, true);
      expect(h.decideLocally(null, 1)).toBe('dam_full');
      h.give(null, 1);
      expect(h.decideLocally(null, 1)).toBeNull();
    });

    it("refuses a user at its limit under any policy but 'reject' (which refuses first)", () => {
      for (const fallback of ['local', 'admit'] as const) {
        const h = holdings({ fallback, userMaxSessions: 1 });
        h.take('u1', 0, true);
        expect(h.decideLocally('u1', 0)).toBe('user_sessions');
        expect(h.decideLocally('u2', 0)).toBeNull();
        expect(h.decideLocally(null, 0)).toBeNull();
      }
      const r = holdings({ fallback: 'reject', userMaxSessions: 1 });
      r.take('u1', 0, true);
      expect(r.decideLocally('u1', 0)).toBe('redis_unavailable');
    });
  });
});
