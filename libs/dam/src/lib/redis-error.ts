import { RedisDeadlineError } from './deadline';

/**
 * Why a Redis call failed, for fallbacks, problem details and metrics:
 * - `timeout`: no answer within the caller's deadline (slow or stopped Redis);
 * - `oom`: Redis refused a write at its memory limit (`maxmemory` with `noeviction`: "OOM command
 *   not allowed"); reads, deletes and Pub/Sub still work, so it is not "down";
 * - `unreachable`: no connection (refused, closed, not ready);
 * - `error`: any other error reply.
 */
export type RedisErrorKind = 'timeout' | 'oom' | 'unreachable' | 'error';

const UNREACHABLE = /ECONNREFUSED|ECONNRESET|EPIPE|ETIMEDOUT|EHOSTUNREACH|Connection is closed|Stream isn't writeable|enableOfflineQueue|MaxRetriesPerRequest|LOADING/i;

export function redisErrorKind(err: unknown): RedisErrorKind {
  if (err instanceof RedisDeadlineError) return 'timeout';
  const message = err instanceof Error ? err.message : String(err);
  if (message.startsWith('OOM ')) return 'oom';
  // A MULTI refused at queueing time: EXECABORT, with the refusals of its commands beside it.
  const previous = (err as { previousErrors?: unknown[] } | null)?.previousErrors;
  if (message.startsWith('EXECABORT') && Array.isArray(previous) && previous.some((e) => redisErrorKind(e) === 'oom')) return 'oom';
  if (UNREACHABLE.test(message) || (err instanceof Error && UNREACHABLE.test(err.name))) return 'unreachable';
  return 'error';
}
