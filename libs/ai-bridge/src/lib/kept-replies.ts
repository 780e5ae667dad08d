import type { Reply } from './protocol';

interface Kept {
  replies: Reply[];
  at: number;
}

/**
 * Replies that came before anyone watched their question (the word that it was accepted is still on
 * its way), held for keepMs. One nobody claims in time is dropped, and `abandon` is told so the
 * question stops generating into the void.
 */
export class KeptReplies {
  private readonly kept = new Map<string, Kept>();
  private count = 0;

  constructor(
    private readonly keepMs: number,
    private readonly maxKept: number,
    private readonly abandon: (messageId: string) => void,
  ) {}

  add(reply: Reply, now = Date.now()): void {
    for (const [id, k] of this.kept) {
      if (now - k.at <= this.keepMs && this.count < this.maxKept) break;
      // Oldest first (Map order): expired, or room is needed.
      this.drop(id, k);
    }
    const k = this.kept.get(reply.messageId) ?? { replies: [], at: now };
    k.replies.push(reply);
    this.kept.set(reply.messageId, k);
    this.count++;
  }

  /** The replies kept for a question, in order of arrival; they are no longer kept. */
  take(messageId: string): Reply[] {
    const k = this.kept.get(messageId);
    if (!k) return [];
    this.kept.delete(messageId);
    this.count -= k.replies.length;
    return k.replies;
  }

  /** Drops a question's replies at once (nobody will watch it) and abandons it. */
  forget(messageId: string): void {
    const k = this.kept.get(messageId);
    if (k) this.drop(messageId, k);
    else this.abandon(messageId);
  }

  clear(): void {
    this.kept.clear();
    this.count = 0;
  }

  private drop(messageId: string, k: Kept): void {
    this.kept.delete(messageId);
    this.count -= k.replies.length;
    // An answer that already ended needs no cancel.
    if (!k.replies.some((r) => r.type !== 'token')) this.abandon(messageId);
  }
}
