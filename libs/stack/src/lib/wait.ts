import { setTimeout as sleep } from 'node:timers/promises';
import { inspect } from 'node:util';
import type { ManagedChild } from './child';

/**
 * Default deadline of a wait, in ms. Generous on purpose: CI machines are shared and slow at
 * random, and a wait that succeeds returns as soon as its condition holds, so only a failing
 * test ever spends it. Below the integration tier's 60 s test timeout, so the wait's own message
 * (not jest's) says what was not reached.
 */
export const WAIT_DEFAULT_MS = 30_000;

/** What a check returns once it holds. */
export type Truthy<T> = Exclude<T, false | 0 | '' | null | undefined>;

export interface WaitOptions {
  /** Deadline in ms. Default {@link WAIT_DEFAULT_MS} (30,000). */
  timeoutMs?: number;
  /** Pause between checks in ms. Default 25. */
  pollMs?: number;
  /** A process the condition depends on: the wait fails at once when it exits, and names its log. */
  child?: ManagedChild;
  /** More state for the failure message, read once when the wait fails. */
  detail?: () => unknown;
}

/**
 * Waits until check() returns a truthy value and returns that value: the one wait of every test
 * tier (a condition, never a fixed sleep). A check that throws counts as not yet. Fails after the
 * deadline with the label, how often it checked, the last value or error, and `detail`.
 *
 * Given a promise instead of a check, waits for it to settle (its rejection passes through) under
 * the same deadline: "this ends at once, not after the 60 s it must not wait" is a wait with a
 * generous deadline, never an assertion on how long it took.
 *
 * For "nothing happened" checks, wait for a later event that must come after the one that must
 * not happen, then assert it did not: never sleep and look.
 */
export function waitFor<T>(label: string, check: () => T | Promise<T>, options?: WaitOptions | number, child?: ManagedChild): Promise<Truthy<T>>;
export function waitFor<T>(label: string, settling: PromiseLike<T>, options?: WaitOptions | number): Promise<T>;
export async function waitFor<T>(
  label: string,
  check: (() => T | Promise<T>) | PromiseLike<T>,
  options: WaitOptions | number = {},
  child?: ManagedChild,
): Promise<unknown> {
  const o: WaitOptions = typeof options === 'number' ? { timeoutMs: options, child } : { child, ...options };
  const timeoutMs = o.timeoutMs ?? WAIT_DEFAULT_MS;
  if (typeof check !== 'function') return settles(label, check, timeoutMs, o);
  const pollMs = o.pollMs ?? 25;
  const started = Date.now();
  let checks = 0;
  let last: { value: unknown } | { error: unknown } = { value: undefined };
  for (;;) {
    if (o.child && !o.child.running) {
      throw new Error(`${label}: ${o.child.opts.name} exited before the condition held${extra(o)}`);
    }
    checks++;
    try {
      const value = await check();
      if (value) return value;
      last = { value };
    } catch (error) {
      last = { error };
    }
    if (Date.now() - started >= timeoutMs) break;
    await sleep(pollMs);
  }
  const seen = 'error' in last ? `last check threw: ${describe(last.error)}` : `last value: ${describe(last.value)}`;
  throw new Error(`${label}: not true within ${timeoutMs} ms (${checks} checks; ${seen})${extra(o)}`);
}

async function settles<T>(label: string, p: PromiseLike<T>, timeoutMs: number, o: WaitOptions): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${label}: not settled within ${timeoutMs} ms${extra(o)}`)), timeoutMs);
  });
  try {
    return await Promise.race([p, late]);
  } finally {
    clearTimeout(timer);
  }
}

/** `detail` and the child's log, for a failure message. */
function extra(o: WaitOptions): string {
  let more = '';
  if (o.detail) {
    try {
      more = `; ${describe(o.detail())}`;
    } catch (err) {
      more = `; detail() threw: ${describe(err)}`;
    }
  }
  return `${more}${o.child ? `; see ${o.child.opts.logFile}` : ''}`;
}

function describe(v: unknown): string {
  if (v instanceof Error) return `${v.name}: ${v.message}`;
  if (typeof v === 'string') return v.length > 500 ? `${v.slice(0, 500)}…` : v;
  return inspect(v, { depth: 3, breakLength: Infinity, maxArrayLength: 20, maxStringLength: 200 });
}
