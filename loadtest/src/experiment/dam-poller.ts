interface DamView {
  held?: number;
  mode?: string;
  global?: { used: number; capacity: number } | null;
}

/**
 * Polls GET /dam and the open-stream gauge of /metrics on each gateway (directly, not through
 * nginx) once a second and keeps the last answer, so the runner's per-second sample can read it
 * without waiting.
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
    // One poll at a time; a caller that needs a fresh figure waits for the one in flight.
    while (this.busy) await new Promise((r) => setTimeout(r, 50));
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
      // Open sessions (SSE streams and sockets) from each gateway's metrics: counted with the dam off too.
      const open = await Promise.all(
        this.gatewayUrls.map(async (u) => {
          try {
            const text = await (await fetch(`${u}/metrics`, { signal: AbortSignal.timeout(900) })).text();
            const lines = text.split('\n').filter((l) => l.startsWith('td_sessions_open{'));
            return lines.length ? lines.reduce((n, l) => n + Number(l.slice(l.lastIndexOf(' ') + 1)), 0) : null;
          } catch {
            return null;
          }
        }),
      );
      const next: Record<string, number> = {};
      if (open.some((n) => n !== null)) next['openStreams'] = open.reduce<number>((a, n) => a + (n ?? 0), 0);
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
      // Only a complete poll says how many sessions are held; a gateway that did not answer
      // leaves the figure unknown rather than 0.
      if (views.every((v) => v !== null && typeof v.held === 'number')) next['sessionsHeld'] = held;
      this.latest = next;
    } finally {
      this.busy = false;
    }
  }

  sample(): Record<string, number> {
    return { ...this.latest };
  }

  /** Sessions the gateways still hold (sum of `held`), read now; null when a gateway did not answer. */
  async held(): Promise<number | null> {
    await this.poll();
    return this.latest['sessionsHeld'] ?? null;
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
  }
}
