import { Injectable, type OnApplicationBootstrap, type OnModuleDestroy } from '@nestjs/common';
import { AiClient } from '@traffic-dam/ai-bridge';
import { AiCapacityService } from '../ai/ai-capacity.service';
import { MetricsService } from '../metrics/metrics.service';
import { SessionRegistry } from '../sessions/session-registry';

/** Where an accepted question stood in the AI queue when the gate took it. */
export interface QueuePlace {
  /** 1 = next to start. */
  position: number;
  /** The line's counter of questions that left it, then (AiClient.queueProgress). */
  dequeued: number;
}

/** How often the line is read, in ms: positions are told at most this often. */
const READ_MS = 1_000;
/** Window of the measured start rate, in ms. */
const RATE_WINDOW_MS = 10_000;

/**
 * The rate at which questions leave the AI queue while some wait (its service rate): a reading
 * taken while the line was empty measures the demand, not what the workers can do, and an
 * estimate divided by it would tell a question seconds for what takes a few hundred ms. Only the
 * intervals that began with a question waiting here count; over a sliding window.
 */
export class BacklogRate {
  private readonly intervals: Array<{ at: number; ms: number; left: number }> = [];
  private last: { at: number; d: number; backlogged: boolean } | null = null;

  constructor(private readonly windowMs: number) {}

  sample(at: number, d: number, backlogged: boolean): void {
    const prev = this.last;
    this.last = { at, d, backlogged };
    if (prev?.backlogged && at > prev.at) this.intervals.push({ at, ms: at - prev.at, left: Math.max(0, d - prev.d) });
    while (this.intervals.length > 0 && (this.intervals[0] as { at: number }).at <= at - this.windowMs) this.intervals.shift();
  }

  /** ms until `ahead` more questions leave, or null while no backlogged second was measured. */
  etaMs(ahead: number): number | null {
    const ms = this.intervals.reduce((a, i) => a + i.ms, 0);
    const left = this.intervals.reduce((a, i) => a + i.left, 0);
    if (ms < 1_000 || left <= 0) return null;
    return Math.round((ahead * ms) / left / 100) * 100;
  }
}

interface Waiting {
  sessionId: string;
  place: QueuePlace;
  position: number;
  etaMs: number | null;
}

/**
 * Tells a waiting client where its accepted question stands in the AI queue, before its first
 * token: `queued` {messageId, position, etaMs} at once, then whenever the position or the estimate
 * moves (read once a second, one XINFO for all of them). The position falls by the questions that
 * left the line since it was queued; the estimate is the position over the measured rate at which
 * they leave while some wait (answer starts per second), never a declared number. Runs where the
 * session lives.
 */
@Injectable()
export class QueuedQuestions implements OnApplicationBootstrap, OnModuleDestroy {
  private readonly waiting = new Map<string, Waiting>();
  private readonly rate = new BacklogRate(RATE_WINDOW_MS);
  private dequeued: number | null = null;
  private timer: NodeJS.Timeout | null = null;
  private reading = false;

  constructor(
    private readonly ai: AiClient,
    private readonly gate: AiCapacityService,
    private readonly registry: SessionRegistry,
    private readonly metrics: MetricsService,
  ) {}

  onApplicationBootstrap(): void {
    // Any reply ends the wait: the first token, or an end without one.
    this.ai.onReply((r) => {
      this.waiting.delete(r.messageId);
    });
    this.timer = setInterval(() => void this.read(), READ_MS);
    this.timer.unref();
  }

  onModuleDestroy(): void {
    if (this.timer) clearInterval(this.timer);
  }

  /** An accepted question of a session held here waits behind others: its client hears so now. */
  track(sessionId: string, messageId: string, place: QueuePlace): void {
    const moved = this.dequeued === null ? 0 : Math.max(0, this.dequeued - place.dequeued);
    const position = Math.max(1, place.position - moved);
    const w: Waiting = { sessionId, place, position, etaMs: this.rate.etaMs(position) };
    this.waiting.set(messageId, w);
    this.metrics.questionsQueued.inc();
    this.registry.emit(sessionId, 'queued', { messageId, position: w.position, etaMs: w.etaMs });
  }

  /** The answer started or ended (or its session is gone): nothing more to tell. */
  started(messageId: string): void {
    this.waiting.delete(messageId);
  }

  private async read(): Promise<void> {
    if (this.reading) return;
    this.reading = true;
    try {
      const d = await this.ai.queueProgress(this.gate.snapshot.answering);
      if (d === null) return;
      this.dequeued = d;
      this.rate.sample(Date.now(), d, this.waiting.size > 0);
      for (const [messageId, w] of this.waiting) {
        if (!this.registry.get(w.sessionId)) {
          this.waiting.delete(messageId);
          continue;
        }
        const position = Math.max(1, w.place.position - Math.max(0, d - w.place.dequeued));
        const etaMs = this.rate.etaMs(position);
        const etaMoved = (etaMs === null) !== (w.etaMs === null) || (etaMs !== null && w.etaMs !== null && Math.abs(etaMs - w.etaMs) >= 1_000);
        if (position === w.position && !etaMoved) continue;
        w.position = position;
        w.etaMs = etaMs;
        this.registry.emit(w.sessionId, 'queued', { messageId, position, etaMs });
      }
    } catch {
      // Redis away: positions are told again on the next read that gets through.
    } finally {
      this.reading = false;
    }
  }
}
