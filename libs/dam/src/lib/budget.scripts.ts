import { createScript } from '@traffic-dam/redis-script';

// Lua beside its typed callers (used by budget.store.ts). Every key carries the same hash tag, so each script
// touches one slot and runs unchanged on Redis Cluster. Time comes from Redis (TIME), never
// from a client clock. Keys: 1 instances (ZSET id -> heartbeat expiry ms), 2 held (HASH id ->
// sessions), 3 generations (HASH id -> fencing generation), 4 users (HASH user -> sessions),
// 5 this instance's users (HASH user -> sessions), 6 generation counter, 7 admits (HASH id ->
// admits that returned ok, so a heartbeat can count the ones whose reply is still travelling).

const NOW = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
`;

// used/capacity over the instances whose heartbeat has not expired.
const GLOBAL = `
local live = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')
local used = 0
if #live > 0 then
  local counts = redis.call('HMGET', KEYS[2], unpack(live))
  for i = 1, #counts do used = used + (tonumber(counts[i]) or 0) end
end
local capacity = #live * tonumber(ARGV[3])
`;

/**
 * One call carries this instance's queued releases and admits (group commit): under load one
 * round trip serves many sessions, each still decided on its own, in order. Releases go first.
 * ARGV: instanceId, generation, slotsPerInstance, userMax (0 = off), nReleases, then one userId
 * per release, then one per admit ('' = none).
 * Releases never take a count below zero; a fenced instance's releases are dropped (its
 * re-registration writes the true count instead).
 * Returns {used, capacity, live, releaseStatus, admitStatus...}: releaseStatus ok | fenced;
 * admitStatus ok | dam_full | user_sessions, or a single 'fenced' for every admit.
 */
const OPS_LUA = `
local nrel = tonumber(ARGV[5])
local relStatus = 'ok'
if nrel > 0 then
  if redis.call('HGET', KEYS[3], ARGV[1]) ~= ARGV[2] then
    relStatus = 'fenced'
  else
    local n = math.min(nrel, tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0'))
    if n > 0 then redis.call('HINCRBY', KEYS[2], ARGV[1], -n) end
    for i = 6, 5 + nrel do
      local u = ARGV[i]
      if u ~= '' and tonumber(redis.call('HGET', KEYS[5], u) or '0') > 0 then
        if redis.call('HINCRBY', KEYS[5], u, -1) <= 0 then redis.call('HDEL', KEYS[5], u) end
        if redis.call('HINCRBY', KEYS[4], u, -1) <= 0 then redis.call('HDEL', KEYS[4], u) end
      end
    end
  end
end
local first = 6 + nrel
if first > #ARGV then return {0, 0, 0, relStatus} end
${NOW}
local mine = redis.call('ZSCORE', KEYS[1], ARGV[1])
if (not mine) or tonumber(mine) <= now or redis.call('HGET', KEYS[3], ARGV[1]) ~= ARGV[2] then
  return {0, 0, 0, relStatus, 'fenced'}
end
${GLOBAL}
local userMax = tonumber(ARGV[4])
local out = {0, capacity, #live, relStatus}
local granted = 0
for i = first, #ARGV do
  local u = ARGV[i]
  if used >= capacity then
    out[#out + 1] = 'dam_full'
  elseif u ~= '' and userMax > 0 and tonumber(redis.call('HGET', KEYS[4], u) or '0') >= userMax then
    out[#out + 1] = 'user_sessions'
  else
    if u ~= '' and userMax > 0 then
      redis.call('HINCRBY', KEYS[4], u, 1)
      redis.call('HINCRBY', KEYS[5], u, 1)
    end
    used = used + 1
    granted = granted + 1
    out[#out + 1] = 'ok'
  end
end
if granted > 0 then
  redis.call('HINCRBY', KEYS[2], ARGV[1], granted)
  redis.call('HINCRBY', KEYS[7], ARGV[1], granted)
end
out[1] = used
return out
`;

/**
 * Heartbeat, registration and reaping in one call. ARGV: instanceId, generation ('' when not
 * registered), slotsPerInstance, held (this instance's count when it sent the beat), ttlMs, users
 * (JSON object user -> count, or '' when unchanged), userTracking ('1'/'0'), keyPrefix of
 * per-instance user hashes, okReplies (ok admit replies the instance had received when it sent
 * the beat). Admits sent before the beat run before it on the same connection; those that
 * returned ok but whose reply had not arrived are admits - okReplies, so the true count is
 * held + admits - okReplies: exact even under a steady stream of admits. Reaps expired instances (this one too, if it was presumed dead): their held counts and
 * user counts go. Per-instance user hashes of the dead are derived from the prefix; they carry
 * the same hash tag, so they live in this slot.
 * Returns {status, generation, used, capacity, live}; status ok | registered | fenced | need_users.
 */
const HEARTBEAT_LUA = `${NOW}
local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, 64)
for _, d in ipairs(dead) do
  redis.call('ZREM', KEYS[1], d)
  redis.call('HDEL', KEYS[2], d)
  redis.call('HDEL', KEYS[3], d)
  redis.call('HDEL', KEYS[7], d)
  local ukey = ARGV[8] .. d
  local m = redis.call('HGETALL', ukey)
  for i = 1, #m, 2 do
    if redis.call('HINCRBY', KEYS[4], m[i], -tonumber(m[i + 1])) <= 0 then redis.call('HDEL', KEYS[4], m[i]) end
  end
  redis.call('DEL', ukey)
end
local status = 'ok'
local gen = ARGV[2]
if (not redis.call('ZSCORE', KEYS[1], ARGV[1])) or redis.call('HGET', KEYS[3], ARGV[1]) ~= gen then
  if ARGV[7] == '1' and ARGV[6] == '' then return {'need_users', '', 0, 0, 0} end
  if gen == '' then status = 'registered' else status = 'fenced' end
  gen = tostring(redis.call('INCR', KEYS[6]))
  redis.call('HSET', KEYS[3], ARGV[1], gen)
  redis.call('HSET', KEYS[7], ARGV[1], ARGV[9])
end
local inflight = tonumber(redis.call('HGET', KEYS[7], ARGV[1]) or ARGV[9]) - tonumber(ARGV[9])
local held = tonumber(ARGV[4]) + inflight
if held < 0 then held = 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[5]), ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], held)
if ARGV[6] ~= '' then
  local old = redis.call('HGETALL', KEYS[5])
  for i = 1, #old, 2 do
    if redis.call('HINCRBY', KEYS[4], old[i], -tonumber(old[i + 1])) <= 0 then redis.call('HDEL', KEYS[4], old[i]) end
  end
  redis.call('DEL', KEYS[5])
  for u, n in pairs(cjson.decode(ARGV[6])) do
    if n > 0 then
      redis.call('HSET', KEYS[5], u, n)
      redis.call('HINCRBY', KEYS[4], u, n)
    end
  end
end
${GLOBAL}
return {status, gen, used, capacity, #live}
`;

/** Read-only view for /dam. ARGV: (unused), (unused), slotsPerInstance. Returns {used, capacity, live...ids}. */
const STATUS_LUA = `${NOW}
${GLOBAL}
local out = {used, capacity}
for _, id in ipairs(live) do out[#out + 1] = id end
return out
`;

/** Leave the budget on a clean shutdown. ARGV: instanceId. */
const DEREGISTER_LUA = `
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('HDEL', KEYS[7], ARGV[1])
local m = redis.call('HGETALL', KEYS[5])
for i = 1, #m, 2 do
  if redis.call('HINCRBY', KEYS[4], m[i], -tonumber(m[i + 1])) <= 0 then redis.call('HDEL', KEYS[4], m[i]) end
end
redis.call('DEL', KEYS[5])
return 'ok'
`;

/** The seven keys of the budget, in the order the scripts read them (see the top of this file). */
export type BudgetKeys = [instances: string, held: string, generations: string, users: string, instanceUsers: string, generation: string, admits: string];

export const budgetOps = createScript<
  BudgetKeys,
  [instanceId: string, generation: string, slots: number, userMax: number, releases: number, ...userIds: string[]],
  [used: number, capacity: number, live: number, released: string, ...admitStatuses: string[]]
>(OPS_LUA);

export const budgetHeartbeat = createScript<
  BudgetKeys,
  [instanceId: string, generation: string, slots: number, held: number, ttlMs: number, users: string, tracking: '0' | '1', userKeyPrefix: string, okReplies: number],
  [status: string, generation: string, used: number, capacity: number, live: number]
>(HEARTBEAT_LUA);

export const budgetStatus = createScript<[instances: string, held: string], [unused: '', unused2: '', slots: number], Array<number | string>>(STATUS_LUA);

export const budgetDeregister = createScript<BudgetKeys, [instanceId: string], string>(DEREGISTER_LUA);
