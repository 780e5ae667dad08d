import { createScript } from '@traffic-dam/redis-script';

// Lua beside its typed callers (used by breaker.ts). KEYS: 1 state (HASH: state, until, reason, since),
// 2 window (HASH: '<bucket>:ok' / '<bucket>:err' -> count). Both under one hash tag.
// Time is Redis's (TIME), so every instance sees the same window and the same open period.

const NOW = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
`;

/** Moves open -> half_open once the open period is over. Leaves now and st set. */
const READ = `${NOW}
local st = redis.call('HGET', KEYS[1], 'state') or 'closed'
if st == 'open' and now >= tonumber(redis.call('HGET', KEYS[1], 'until') or '0') then
  st = 'half_open'
  redis.call('HSET', KEYS[1], 'state', st, 'since', now)
end
`;

const REPLY = `
local h = redis.call('HMGET', KEYS[1], 'until', 'reason', 'since')
return {st, tonumber(h[1] or '0') - now, h[2] or '', now}
`;

/** The shared state. Returns {state, msUntilHalfOpen, reason, now}. */
const STATE_LUA = `${READ}${REPLY}`;

/**
 * Counts one answer's outcome in the rolling window and trips the breaker on the error ratio.
 * ARGV: outcome ('ok'|'err'), windowMs, bucketMs, minVolume, errorRatio, openMs.
 * Returns {state, msUntilHalfOpen, reason, now}.
 */
const RECORD_LUA = `${READ}
local bucketMs = tonumber(ARGV[3])
local bucket = math.floor(now / bucketMs)
local oldest = bucket - math.floor(tonumber(ARGV[2]) / bucketMs) + 1
redis.call('HINCRBY', KEYS[2], bucket .. ':' .. ARGV[1], 1)
redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[2]) * 2)
local ok, err = 0, 0
local all = redis.call('HGETALL', KEYS[2])
for i = 1, #all, 2 do
  local b, kind = string.match(all[i], '^(%d+):(%a+)$')
  if tonumber(b) < oldest then
    redis.call('HDEL', KEYS[2], all[i])
  elseif kind == 'ok' then ok = ok + tonumber(all[i + 1])
  else err = err + tonumber(all[i + 1]) end
end
if st == 'closed' and ok + err >= tonumber(ARGV[4]) and err / (ok + err) >= tonumber(ARGV[5]) then
  st = 'open'
  redis.call('HSET', KEYS[1], 'state', st, 'until', now + tonumber(ARGV[6]), 'reason', 'error_ratio', 'since', now)
end
${REPLY}`;

/**
 * Opens the breaker now. ARGV: reason, openMs, onlyIfClosed ('1' keeps an open period as is).
 * Returns {state, msUntilHalfOpen, reason, now}.
 */
const TRIP_LUA = `${READ}
if st ~= 'open' or ARGV[3] ~= '1' then
  st = 'open'
  redis.call('HSET', KEYS[1], 'state', st, 'until', now + tonumber(ARGV[2]), 'reason', ARGV[1], 'since', now)
end
${REPLY}`;

/** Closes it after a good probe and starts a fresh window. Only from half_open. */
const CLOSE_LUA = `${READ}
if st == 'half_open' then
  st = 'closed'
  redis.call('HSET', KEYS[1], 'state', st, 'until', 0, 'reason', 'probe_ok', 'since', now)
  redis.call('DEL', KEYS[2])
end
${REPLY}`;

type BreakerKeys = [state: string, window: string];
/** {state, msUntilHalfOpen, reason, now} */
type BreakerReply = [state: string, msUntilHalfOpen: number, reason: string, now: number];

export const breakerState = createScript<BreakerKeys, [], BreakerReply>(STATE_LUA);
export const breakerRecord = createScript<
  BreakerKeys,
  [outcome: 'ok' | 'err', windowMs: number, bucketMs: number, minVolume: number, errorRatio: number, openMs: number],
  BreakerReply
>(RECORD_LUA);
export const breakerTrip = createScript<BreakerKeys, [reason: string, openMs: number, onlyIfClosed: '0' | '1'], BreakerReply>(TRIP_LUA);
export const breakerClose = createScript<BreakerKeys, [], BreakerReply>(CLOSE_LUA);
