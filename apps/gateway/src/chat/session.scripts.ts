// Lua beside its caller (session.repository.ts). Both keys of a session share one hash tag,
// so each script touches a single slot and also runs on Redis Cluster.

/**
 * Authorize a question and claim the session's single in-flight slot, in one round trip.
 * A session whose instance is draining takes no new question ('draining').
 * KEYS: session, inflight. ARGV: tokenHash, messageId, inflightTtlMs.
 * Returns {status, ownerInstanceId, userId}.
 */
export const CLAIM_LUA = `
local s = redis.call('HMGET', KEYS[1], 'tokenHash', 'instanceId', 'userId', 'draining')
if not s[1] then return {'not_found', '', ''} end
if s[1] ~= ARGV[1] then return {'forbidden', '', ''} end
if s[4] then return {'draining', s[2], s[3] or ''} end
if not redis.call('SET', KEYS[2], ARGV[2], 'NX', 'PX', ARGV[3]) then return {'busy', s[2], s[3] or ''} end
return {'ok', s[2], s[3] or ''}
`;

/**
 * Check a token without claiming anything. KEYS: session. ARGV: tokenHash.
 * Returns {status, ownerInstanceId}.
 */
export const AUTHORIZE_LUA = `
local s = redis.call('HMGET', KEYS[1], 'tokenHash', 'instanceId')
if not s[1] then return {'not_found', ''} end
if s[1] ~= ARGV[1] then return {'forbidden', ''} end
return {'ok', s[2]}
`;

/** Free the in-flight slot only if it still holds this message. KEYS: inflight. ARGV: messageId. */
export const RELEASE_LUA = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`;

/** Delete a session; returns the message in flight, if any, so it can be cancelled. KEYS: session, inflight. */
export const REMOVE_LUA = `
local m = redis.call('GET', KEYS[2])
redis.call('DEL', KEYS[1], KEYS[2])
return m
`;

/**
 * Mark a session of a draining instance: from now on no question can claim it, so the returned
 * in-flight message (or nil) is the last one it will carry. KEYS: session, inflight.
 */
export const DRAIN_LUA = `
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSET', KEYS[1], 'draining', '1') end
return redis.call('GET', KEYS[2])
`;
