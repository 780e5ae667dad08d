interface DamView {
  held?: number;
  mode?: string;
  global?: { used: number; capacity: number } | null;
}

/**
 * Polls GET /dam on each gateway (directly, not through nginx) once a second and keeps the last
 * answer, so the runner's per-second sample can read it without waiting.
 */
export class DamPoller {
  private latest: Record<string, number> = {};
  private timer?: NodeJS.Timeout;
  private busy = false;

  constructor(private readonly gatewayUrls: string[]) {}

  start(): void {
    this.timer = setInterval(() => void this.poll(), 1_000);
    void this.poll();
  }

  private async poll(): Promise<void> {
    if (this.busy) return;
    this.busy = true;
    try {
      const views = await Promise.all(
        this.gatewayUrls.map(async (u) => {
          try {
            const res = await fetch(`${u}/dam`, { signal: AbortSignal.timeout(900) });
            return (await res.json()) as DamView;
          } catch {
            return null;
          }
        }),
      );
      const next: Record<string, number> = {};
      let held = 0;
      views.forEach((v, i) => {
        if (!v) return;
        if (typeof v.held === 'number') {
          next[`gw${i}Held`] = v.held;
          held += v.held;
        }
        if (v.global && next['damUsed'] === undefined) {
          next['damUsed'] = v.global.used;
          next['damCapacity'] = v.global.capacity;
        }
      });
      next['sessionsHeld'] = held;
      this.latest = next;
    } finally {
      this.busy = false;
    }
  }

  sample(): Record<string, number> {
    return { ...this.latest };
  }

  /** Sessions the gateways still hold (sum of `held`), read now. */
  async held(): Promise<number> {
    await this.poll();
    return this.latest['sessionsHeld'] ?? 0;
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
  }
}
