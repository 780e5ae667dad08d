import type { SessionEvent } from '../sessions/session-events';

/**
 * The last `capacity` events of a session, for a client that reconnects: what it missed is the
 * events after the id it names. In memory on the instance holding the session, so a relayed
 * token costs no Redis call; a resume on another instance is served from here over the control
 * channel.
 */
export class EventRing {
  private readonly items: (SessionEvent | undefined)[];
  private next = 0;
  private size = 0;

  constructor(readonly capacity: number) {
    this.items = new Array<SessionEvent | undefined>(capacity);
  }

  push(e: SessionEvent): void {
    this.items[this.next] = e;
    this.next = (this.next + 1) % this.capacity;
    this.size = Math.min(this.size + 1, this.capacity);
  }

  /** Id of the newest event kept, 0 when none. */
  get lastId(): number {
    return this.size === 0 ? 0 : (this.at(this.size - 1)?.id ?? 0);
  }

  /**
   * The events after id `after`, oldest first; null when some of them are no longer kept (or
   * `after` is an id this session never sent), so a resume cannot be whole.
   */
  since(after: number): SessionEvent[] | null {
    const last = this.lastId;
    if (after > last) return null;
    if (after === last) return [];
    const first = this.at(0)?.id ?? 1;
    if (after < first - 1) return null;
    const out: SessionEvent[] = [];
    for (let i = 0; i < this.size; i++) {
      const e = this.at(i) as SessionEvent;
      if (e.id > after) out.push(e);
    }
    return out;
  }

  /** The i-th oldest event kept. */
  private at(i: number): SessionEvent | undefined {
    return this.items[(this.next - this.size + i + this.capacity) % this.capacity];
  }
}
