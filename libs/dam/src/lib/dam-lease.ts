import type { Lease, ReleaseOutcome } from './admission';

/** Who is told when a lease is released: the dam that gave it. */
export interface LeaseOwner {
  onRelease(lease: DamLease): void;
}

/** The lease admit() hands out; its one release goes back to the dam, which gives the slot back. */
export class DamLease implements Lease {
  released = false;
  confirmation: Promise<ReleaseOutcome> | null = null;
  constructor(
    private readonly owner: LeaseOwner,
    readonly userId: string | null,
    readonly budgeted: boolean,
    readonly tierIndex: number,
    readonly tier: string,
  ) {}

  release(): void {
    if (this.released) return;
    this.released = true;
    this.owner.onRelease(this);
  }
}
