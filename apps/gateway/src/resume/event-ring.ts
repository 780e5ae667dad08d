import type { SessionEvent } from '../sessions/session-events';

/**
 * The last `capacity` events of a session, for a client that reconnects: what it missed is the
 * events after the id it names. In memory on the instance holding the session, so a relayed
 * token costs no Redis call; a resume on another instance is served from here over the control
 * channel. It grows with what it keeps (an idle session holds a few events, not `capacity`
 * slots) and drops the oldest in batches, so a push is amortised O(1).
 */
export class EventRing {
  private items: SessionEvent[] = [];
  /** Index of the oldest event kept. */
  private start = 0;

  constructor(readonly capacity: number) {}

  push(e: SessionEvent): void {
    this.items.push(e);
    if (this.items.length - this.start > this.capacity) this.start++;
    // Compact once as much is dropped as is kept.
    if (this.start >= this.capacity) {
      this.items = this.items.slice(this.start);
      this.start = 0;
    }
  }

  /** Id of the newest event kept, 0 when none. */
  get lastId(): number {
    return this.items.length > this.start ? (this.items[this.items.length - 1] as SessionEvent).id : 0;
  }

  /**
   * The events after id `after`, oldest first; null when some of them are no longer kept (or
   * `after` is an id this session never sent), so a resume cannot be whole.
   */
  since(after: number): SessionEvent[] | null {
    const last = this.lastId;
    if (after > last) return null;
    if (after === last) return [];
    const first = this.items[this.start]?.id ?? 1;
    if (after < first - 1) return null;
    // Ids are consecutive: the one after `after` is at a known place.
    return this.items.slice(this.start + (after - first + 1));
  }
}
