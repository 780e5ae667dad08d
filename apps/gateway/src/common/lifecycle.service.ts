import { Injectable, type BeforeApplicationShutdown } from '@nestjs/common';

/** `graceful`: the SIGTERM path, with the configured grace and in-flight limit. `immediate`: end now. */
export type DrainMode = 'graceful' | 'immediate';
type DrainHook = (mode: DrainMode) => Promise<void> | void;

/**
 * Knows whether the instance is shutting down, and runs the drain hooks once when it starts to.
 * main.ts calls drain('graceful') on SIGTERM before it closes the app; app.close() alone (tests)
 * drains at once through beforeApplicationShutdown.
 */
@Injectable()
export class LifecycleService implements BeforeApplicationShutdown {
  private drainingSince: number | null = null;
  private drained: Promise<void> | null = null;
  private readonly hooks: DrainHook[] = [];

  get draining(): boolean {
    return this.drainingSince !== null;
  }

  /** Epoch ms when the drain started, or null. */
  get since(): number | null {
    return this.drainingSince;
  }

  onDrain(hook: DrainHook): void {
    this.hooks.push(hook);
  }

  /** Starts the drain (readiness false and new streams refused from now on); idempotent. */
  drain(mode: DrainMode = 'graceful'): Promise<void> {
    if (this.drained) return this.drained;
    this.drainingSince = Date.now();
    this.drained = Promise.allSettled(this.hooks.map((h) => h(mode))).then(() => undefined);
    return this.drained;
  }

  async beforeApplicationShutdown(): Promise<void> {
    await this.drain('immediate');
  }
}
