import { Tiers } from './tiers';

const tiers = new Tiers([
  { name: 'pro', sessions: 0.2, ai: 0.3 },
  { name: 'free', sessions: 0, ai: 0.1 },
  { name: 'anonymous', sessions: 0, ai: 0 },
]);
const user = (tier?: string) => ({ userId: 'jwt:x', claims: tier === undefined ? {} : { tier } });

describe('Tiers', () => {
  it('puts a verified user in its claimed tier, else the lowest named one; the unverified are anonymous', () => {
    expect(tiers.of(user('pro'))).toBe('pro');
    expect(tiers.of(user('free'))).toBe('free');
    expect(tiers.of(user())).toBe('free');
    expect(tiers.of(user('platinum'))).toBe('free');
    // A claim cannot make anyone anonymous on purpose, nor anything else: it is just unknown.
    expect(tiers.of(user('anonymous'))).toBe('free');
    expect(tiers.of(null)).toBe('anonymous');
  });

  it('gives each tier the AI room not reserved above it', () => {
    expect(tiers.aiRoom('pro')).toBe(1);
    expect(tiers.aiRoom('free')).toBeCloseTo(0.7);
    expect(tiers.aiRoom('anonymous')).toBeCloseTo(0.6);
  });

  it('is off without configuration', () => {
    const none = new Tiers(undefined);
    expect(none.of(user('pro'))).toBeNull();
    expect(none.aiRoom(null)).toBe(1);
  });
});
