import { Injectable, type BeforeApplicationShutdown } from '@nestjs/common';

type DrainHook = () => Promise<void> | void;

/** Knows whether the instance is shutting down, and runs the drain hooks once when it starts to. */
@Injectable()
export class LifecycleService implements BeforeApplicationShutdown {
  private drainingSince: number | null = null;
  private readonly hooks: DrainHook[] = [];

  get draining(): boolean {
    return this.drainingSince !== null;
  }

  onDrain(hook: DrainHook): void {
    this.hooks.push(hook);
  }

  async beforeApplicationShutdown(): Promise<void> {
    if (this.drainingSince !== null) return;
    this.drainingSince = Date.now();
    await Promise.allSettled(this.hooks.map((h) => h()));
  }
}
