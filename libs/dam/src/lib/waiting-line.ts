import type { Cluster, Redis } from 'ioredis';
import type { LeaveStatus, TicketState } from './budget.store';
import { TurnoverMeter } from './turnover';

/** One admitted session's hold on the budget (defined with the dam; the line hands them out). */
export interface LineLease {
  release(): void;
}

/** Why a wait ended without a slot. */
export type WaitEndReason =
  /** The wait offered ran out. */
  | 'timeout'
  /** A higher tier's arrival took its place in a full line. */
  | 'shed'
  /** The caller left (leave()). */
  | 'left'
  /** The instance stops. */
  | 'stopped'
  /** Redis lost its ticket (a restart, or this instance was presumed dead and reaped). */
  | 'lost';

export type WaitOutcome<L> =
  | { admitted: true; lease: L; waitedMs: number }
  | { admitted: false; reason: WaitEndReason; waitedMs: number; retryAfterMs: number | null };

/** A request waiting in the line for a slot. */
export interface Waiter<L = LineLease> {
  /** Unique in the cluster: `<n>@<instanceId>`. */
  readonly ticket: string;
  readonly tier: string;
  /** The latest known place in the line, 1 = next. */
  readonly position: number;
  /** Estimated ms until admitted, from the measured turnover; null while unknown. */
  readonly etaMs: number | null;
  /** Settles once: a slot, or why not. */
  readonly outcome: Promise<WaitOutcome<L>>;
  /** Called after a heartbeat that changed the position, or the estimate by a second or more (so about once a second at most). */
  onChange(cb: (position: number, etaMs: number | null) => void): void;
  /** The caller went away: leaves the line at once; a slot granted meanwhile passes on. Idempotent. */
  leave(): void;
}

/** What the line needs of its dam. */
export interface LineHost<L extends LineLease> {
  leave(ticket: string): Promise<LeaveStatus>;
  collect(): Promise<Array<[ticket: string, outcome: 'g' | 'x']>>;
  /** A granted slot arrived: count it and make its lease (userId as tracked, tier index). */
  granted(userId: string | null, tier: number): L;
  /** A waiter left the line without a slot: its user no longer counts it. */
  waiterGone(userId: string | null): void;
}

type State = 'joining' | 'waiting' | 'leaving' | 'done';

class LocalWaiter<L extends LineLease> implements Waiter<L> {
  state: State = 'joining';
  position = 0;
  etaMs: number | null = null;
  /** Why it is leaving, once it is. */
  ending: WaitEndReason | null = null;
  readonly outcome: Promise<WaitOutcome<L>>;
  private settle!: (o: WaitOutcome<L>) => void;
  private listener: ((position: number, etaMs: number | null) => void) | null = null;
  private sentEta: number | null = null;

  constructor(
    private readonly line: WaitingLine<L>,
    readonly ticket: string,
    readonly tier: string,
    readonly tierIndex: number,
    readonly userId: string | null,
    readonly joinedAt: number,
    readonly deadline: number,
  ) {
    this.outcome = new Promise((resolve) => (this.settle = resolve));
  }

  onChange(cb: (position: number, etaMs: number | null) => void): void {
    this.listener = cb;
  }

  leave(): void {
    this.line.end(this, 'left');
  }

  /** A new reading; tells the listener when it is worth telling. */
  update(position: number, etaMs: number | null): void {
    const moved = position !== this.position;
    const etaMoved = (etaMs === null) !== (this.sentEta === null) || (etaMs !== null && this.sentEta !== null && Math.abs(etaMs - this.sentEta) >= 1_000);
    this.position = position;
    this.etaMs = etaMs;
    if (!moved && !etaMoved) return;
    this.sentEta = etaMs;
    this.listener?.(position, etaMs);
  }

  finish(o: WaitOutcome<L>): void {
    if (this.state === 'done') return;
    this.state = 'done';
    this.settle(o);
  }
}

/**
 * This instance's side of the waiting line (the Lua is in line.lua.ts): its waiters, their
 * positions and estimates after each heartbeat, their deadlines, the slots granted to them
 * (collected when the blocking wake-up pops, or when a heartbeat shows some waiting), and leaves.
 * A ticket Redis holds that no waiter here knows any more is left (a leave that failed); a granted
 * slot for such a ticket is taken and released at once, so it passes on to the next in line.
 */
export class WaitingLine<L extends LineLease> {
  private readonly waiters = new Map<string, LocalWaiter<L>>();
  private readonly turnover: TurnoverMeter;
  private counter = 0;
  private collecting = false;
  private collectAgain = false;
  private running = false;
  private wakeConn: Redis | Cluster | null = null;
  private ownsWake = false;
  lineLength = 0;

  constructor(
    private readonly host: LineHost<L>,
    private readonly instanceId: string,
    private readonly o: { maxWaitMs: number; turnoverWindowMs: number },
  ) {
    this.turnover = new TurnoverMeter(o.turnoverWindowMs);
  }

  /** Waiters on this instance (joining or in the line). */
  get size(): number {
    return this.waiters.size;
  }

  /** Slots freed per second in the cluster, as measured; null while unknown. */
  get turnoverPerSec(): number | null {
    return this.turnover.perSec();
  }

  /** The line's own estimate of a wait behind `ahead` waiters, in ms (null: unknown). */
  etaMs(ahead: number): number | null {
    return this.turnover.etaMs(ahead);
  }

  /** The most waiters ahead a wait of waitMs can get through (-1: unknown, any). */
  reachable(waitMs: number): number {
    return this.turnover.reachable(waitMs);
  }

  /** A waiter for an admit about to be sent (so a grant or a heartbeat that beats its reply finds it). */
  create(tier: string, tierIndex: number, userId: string | null, waitMs: number): LocalWaiter<L> {
    const now = Date.now();
    const w = new LocalWaiter<L>(this, `${++this.counter}@${this.instanceId}`, tier, tierIndex, userId, now, now + Math.min(waitMs, this.o.maxWaitMs));
    this.waiters.set(w.ticket, w);
    return w;
  }

  /** Its admit answered: in the line at this position. */
  joined(w: LocalWaiter<L>, position: number): Waiter<L> {
    if (w.state === 'joining') w.state = 'waiting';
    w.update(position, this.turnover.etaMs(position));
    return w;
  }

  /** Its admit answered otherwise (admitted at once, refused, or not answered): it never waited. */
  discard(w: LocalWaiter<L>): void {
    if (w.state === 'joining') this.waiters.delete(w.ticket);
  }

  /** Ends a wait without a slot: leaves the line in Redis first. */
  end(w: LocalWaiter<L>, reason: WaitEndReason): void {
    if (w.state === 'done' || w.state === 'leaving') return;
    w.ending = reason;
    w.state = 'leaving';
    // Whatever Redis answers (left; released: granted meanwhile and passed on in the same script;
    // shed; gone), the wait is over here. A leave that failed leaves a ticket the next heartbeat finds.
    this.host.leave(w.ticket).then(
      () => this.close(w, reason),
      () => this.close(w, reason),
    );
  }

  private close(w: LocalWaiter<L>, reason: WaitEndReason): void {
    if (w.state === 'done') return;
    this.waiters.delete(w.ticket);
    this.host.waiterGone(w.userId);
    w.finish({ admitted: false, reason, waitedMs: Date.now() - w.joinedAt, retryAfterMs: this.turnover.etaMs(Math.max(1, w.position)) });
  }

  /** A heartbeat's reading: turnover, positions, deadlines, missed wake-ups, tickets nobody here knows. */
  onHeartbeat(r: { freed: number; now: number; lineLength: number; outcomes: number; tickets: Map<string, TicketState> | null }): void {
    this.turnover.sample(r.now, r.freed);
    this.lineLength = r.lineLength;
    if (r.outcomes > 0) this.wake();
    if (r.tickets === null) return;
    for (const [ticket, state] of r.tickets) {
      const w = this.waiters.get(ticket);
      if (!w) {
        if (typeof state === 'number') void this.host.leave(ticket).catch(() => undefined);
        continue;
      }
      if (typeof state === 'number' && w.state === 'waiting') w.update(state, this.turnover.etaMs(state));
    }
    // Joined before the beat was sent (their join ran first on the same connection), and not in
    // Redis: the line lost them. A ticket granted or shed meanwhile is in the reply as its outcome.
    for (const w of [...this.waiters.values()]) {
      if (w.state === 'waiting' && !r.tickets.has(w.ticket)) {
        this.waiters.delete(w.ticket);
        this.host.waiterGone(w.userId);
        w.finish({ admitted: false, reason: 'lost', waitedMs: Date.now() - w.joinedAt, retryAfterMs: null });
      }
    }
  }

  /** Ends every wait here without a slot (the instance drains), leaving the line in Redis. */
  endAll(reason: WaitEndReason): void {
    for (const w of [...this.waiters.values()]) if (w.state === 'waiting') this.end(w, reason);
  }

  /** Ends the waits whose time is up; run on every heartbeat tick, whether Redis answers or not. */
  expire(now: number): void {
    for (const w of this.waiters.values()) if (w.state === 'waiting' && now >= w.deadline) this.end(w, 'timeout');
  }

  /** A wake-up (or a heartbeat) says outcomes wait: collect them, one collect at a time. */
  wake(): void {
    if (this.collecting) {
      this.collectAgain = true;
      return;
    }
    this.collecting = true;
    this.host.collect().then(
      (outcomes) => {
        for (const [ticket, outcome] of outcomes) this.resolve(ticket, outcome);
        this.collected();
      },
      () => this.collected(),
    );
  }

  private collected(): void {
    this.collecting = false;
    if (this.collectAgain) {
      this.collectAgain = false;
      this.wake();
    }
  }

  private resolve(ticket: string, outcome: 'g' | 'x'): void {
    const w = this.waiters.get(ticket);
    if (outcome === 'x') {
      if (!w || w.state !== 'waiting') return;
      this.host.waiterGone(w.userId);
      this.waiters.delete(ticket);
      w.finish({ admitted: false, reason: 'shed', waitedMs: Date.now() - w.joinedAt, retryAfterMs: this.turnover.etaMs(Math.max(1, w.position)) });
      return;
    }
    const lease = this.host.granted(w?.userId ?? null, w?.tierIndex ?? 0);
    if (!w || w.state !== 'waiting') {
      // Its waiter is gone (or leaving): the slot passes on to the next in line, and the user's
      // count goes with the lease's release (the leave then finds nothing).
      lease.release();
      if (w) {
        this.waiters.delete(ticket);
        w.finish({ admitted: false, reason: w.ending ?? 'left', waitedMs: Date.now() - w.joinedAt, retryAfterMs: null });
      }
      return;
    }
    this.waiters.delete(ticket);
    w.finish({ admitted: true, lease, waitedMs: Date.now() - w.joinedAt });
  }

  /** Starts the blocking wake-up loop on its own connection. */
  start(redis: Redis | Cluster, wakeRedis: Redis | Cluster | undefined, noticesKey: string): void {
    if (this.running) return;
    this.running = true;
    this.ownsWake = wakeRedis === undefined;
    const conn = wakeRedis ?? redis.duplicate();
    conn.on('error', () => undefined);
    this.wakeConn = conn;
    void this.wakeLoop(conn, noticesKey);
  }

  private async wakeLoop(conn: Redis | Cluster, key: string): Promise<void> {
    let backoff = 50;
    while (this.running) {
      try {
        // A slot granted (or a ticket shed) pushes one notice; the outcomes themselves are collected.
        const got = await (conn as Redis).blmpop(2, 1, key, 'LEFT', 'COUNT', 100);
        backoff = 50;
        if (got && this.running) this.wake();
      } catch {
        if (!this.running) return;
        await new Promise((r) => setTimeout(r, backoff).unref());
        backoff = Math.min(backoff * 2, 1_000);
      }
    }
  }

  /** Every waiter here ends (the instance stops); the line in Redis is cleared by the deregistration. */
  stop(): void {
    this.running = false;
    if (this.wakeConn && this.ownsWake) this.wakeConn.disconnect();
    this.wakeConn = null;
    for (const w of this.waiters.values()) {
      w.finish({ admitted: false, reason: 'stopped', waitedMs: Date.now() - w.joinedAt, retryAfterMs: null });
    }
    this.waiters.clear();
  }
}
