import { createHash, randomBytes } from 'node:crypto';

/**
 * A resumable event id: `<handle>.<n>`, n the event's number in its session. The handle is a
 * random credential bound to the session (16 bytes, base64url): EventSource sends back only
 * Last-Event-ID (no header of ours, and the same URL, whose ticket is spent), so the id itself
 * must say which session to resume and prove the client may. Last-Event-ID is a header, which
 * no log records; Redis holds only the handle's SHA-256.
 */
const EVENT_ID = /^([A-Za-z0-9_-]{22})\.(\d{1,15})$/;

export interface ResumePoint {
  handle: string;
  /** The last event the client has. */
  after: number;
}

export function newResumeHandle(): string {
  return randomBytes(16).toString('base64url');
}

export function hashHandle(handle: string): string {
  return createHash('sha256').update(handle).digest('base64url');
}

export function formatEventId(handle: string, n: number): string {
  return `${handle}.${n}`;
}

/** The resume point of a Last-Event-ID header, or null when it is not one of ours. */
export function parseEventId(header: string | undefined): ResumePoint | null {
  const m = header === undefined ? null : EVENT_ID.exec(header);
  return m ? { handle: m[1] as string, after: Number(m[2]) } : null;
}
