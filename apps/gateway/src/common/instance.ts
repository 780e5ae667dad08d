import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';

/**
 * A new id per process start: a restarted instance must not be mistaken for the one it
 * replaces, whose sessions and reply channel are gone.
 */
export function makeInstanceId(name: string | undefined, pid = process.pid): string {
  const base = (name ?? hostname()).replace(/[^A-Za-z0-9_.-]/g, '-').slice(0, 40);
  return `${base}-${pid}-${randomBytes(3).toString('hex')}`;
}

export const INSTANCE_ID = Symbol('INSTANCE_ID');
