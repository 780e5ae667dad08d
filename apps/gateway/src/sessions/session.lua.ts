import { createScript } from '@traffic-dam/redis-script';

// Lua beside its typed callers (used by session.repository.ts). Both keys of a session share one
// hash tag, so each script touches a single slot and also runs on Redis Cluster.

type SessionKeys = [session: string, inflight: string];

/**
 * Authorize a question and claim the session's single in-flight slot, in one round trip.
 * A session whose instance is draining takes no new question ('draining').
 * ARGV: tokenHash, messageId, inflightTtlMs. Returns {status, ownerInstanceId, userId, tier}.
 */
export const claimInflight = createScript<SessionKeys, [tokenHash: string, messageId: string, ttlMs: number], [string, string, string, string]>(`
local s = redis.call('HMGET', KEYS[1], 'tokenHash', 'instanceId', 'userId', 'draining', 'tier')
if not s[1] then return {'not_found', '', '', ''} end
if s[1] ~= ARGV[1] then return {'forbidden', '', '', ''} end
if s[4] then return {'draining', s[2], s[3] or '', s[5] or ''} end
if not redis.call('SET', KEYS[2], ARGV[2], 'NX', 'PX', ARGV[3]) then return {'busy', s[2], s[3] or '', s[5] or ''} end
return {'ok', s[2], s[3] or '', s[5] or ''}
`);

/** Check a token without claiming anything. ARGV: tokenHash. Returns {status, ownerInstanceId, transport}. */
export const authorizeSession = createScript<[session: string], [tokenHash: string], [string, string, string]>(`
local s = redis.call('HMGET', KEYS[1], 'tokenHash', 'instanceId', 'transport')
if not s[1] then return {'not_found', '', ''} end
if s[1] ~= ARGV[1] then return {'forbidden', '', ''} end
return {'ok', s[2], s[3] or 'sse'}
`);

/** Free the in-flight slot only if it still holds this message. ARGV: messageId. Returns 1 if freed. */
export const releaseInflight = createScript<[inflight: string], [messageId: string], number>(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`);

/** Delete a session; returns the message in flight, if any, so it can be cancelled. Idempotent. */
export const removeSession = createScript<SessionKeys, [], string | null>(`
local m = redis.call('GET', KEYS[2])
redis.call('DEL', KEYS[1], KEYS[2])
return m
`);

/**
 * Mark a session of a draining instance: from now on no question can claim it, so the returned
 * in-flight message (or nil) is the last one it will carry.
 */
export const markDraining = createScript<SessionKeys, [], string | null>(`
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSET', KEYS[1], 'draining', '1') end
return redis.call('GET', KEYS[2])
`);
