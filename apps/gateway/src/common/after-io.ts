/**
 * Runs the writes queued this turn together, once the turn's I/O is done (one setImmediate for
 * all). After the I/O, not after each callback (process.nextTick): a gateway that falls behind
 * reads many reply batches in one turn, and each stream then gets one write for all of them, so
 * the writes (most of what a token costs) grow fewer per token as the load grows, while an idle
 * gateway adds no delay.
 */
const queued: Array<() => void> = [];

function runQueued(): void {
  for (const fn of queued.splice(0)) fn();
}

export function afterIo(fn: () => void): void {
  if (queued.push(fn) === 1) setImmediate(runQueued);
}
