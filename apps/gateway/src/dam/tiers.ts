import { ANONYMOUS_TIER, type TierConfig } from '../common/config/config';
import type { VerifiedIdentity } from './identity';

/**
 * The priority tiers, configured in one place (DAM_TIERS), highest first, anonymous last. A
 * verified identity is in the tier its claim names; one without a claim, or with a claim no tier
 * has, is in the lowest named tier; anyone unverified is anonymous. Without DAM_TIERS there are
 * none: every session is alike.
 */
export class Tiers {
  readonly list: readonly TierConfig[];

  constructor(configured: readonly TierConfig[] | undefined) {
    this.list = configured ?? [];
  }

  get enabled(): boolean {
    return this.list.length > 0;
  }

  /** The tier of a user, or null without tiers. */
  of(verified: VerifiedIdentity | null): string | null {
    if (!this.enabled) return null;
    if (verified === null) return ANONYMOUS_TIER;
    const claim = verified.claims.tier;
    if (claim !== undefined && claim !== ANONYMOUS_TIER && this.list.some((t) => t.name === claim)) return claim;
    const named = this.list.filter((t) => t.name !== ANONYMOUS_TIER);
    return named[named.length - 1]?.name ?? ANONYMOUS_TIER;
  }

  /**
   * The part of the AI queue's room a question of this tier may fill: 1 less the shares reserved
   * for the tiers above it. Under overload the lowest tiers are refused first; a higher tier still
   * finds room in what is kept for it.
   */
  aiRoom(tier: string | null): number {
    if (tier === null) return 1;
    const i = this.list.findIndex((t) => t.name === tier);
    const above = this.list.slice(0, Math.max(0, i)).reduce((a, t) => a + t.ai, 0);
    return Math.max(0, 1 - above);
  }
}
