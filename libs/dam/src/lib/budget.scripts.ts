import { createScript } from '@traffic-dam/redis-script';
import { COLLECT, DROP_INSTANCE, LEAVE, LINE_HELPERS, PUMP, RANKS, SHED, tierArgs } from './line.lua';

// Lua beside its typed callers (used by budget.store.ts); the waiting line's parts are in
// line.lua.ts. Every key carries the same hash tag, so each script touches one slot and runs
// unchanged on Redis Cluster. Time comes from Redis (TIME), never from a client clock.
// Keys: 1 instances (ZSET id -> heartbeat expiry ms), 2 held (HASH id -> sessions), 3 generations
// (HASH id -> fencing generation), 4 users (HASH user -> sessions and waiters), 5 this instance's
// users, 6 generation counter, 7 admits (HASH id -> admits that returned ok, so a heartbeat can
// count the ones whose reply is still travelling), 8 line (ZSET ticket -> tier x span + arrival),
// 9 arrival counter, 10 this instance's tickets (HASH ticket -> 'tier|user'), 11 this instance's
// outcomes (HASH ticket -> g | x), 12 grants (HASH id -> slots granted, not yet collected),
// 13 tiers (HASH tier -> sessions), 14 this instance's tiers, 15 freed (slots freed, ever).

/** Locals every script shares, declared first so the helpers close over them. */
const PRELUDE = `
local now, used, capacity = 0, 0, 0
local live = {}
local base = ARGV[5]
`;

const NOW = `
local t = redis.call('TIME')
now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
`;

// used/capacity over the instances whose heartbeat has not expired.
const GLOBAL = `
live = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')
used = 0
if #live > 0 then
  local counts = redis.call('HMGET', KEYS[2], unpack(live))
  for i = 1, #counts do used = used + (tonumber(counts[i]) or 0) end
end
capacity = #live * tonumber(ARGV[3])
`;

const FMT = `local function fmt(x) return string.format('%.0f', x) end`;

/**
 * One call carries this instance's queued releases, leaves, a collect and admits (group commit):
 * under load one round trip serves many sessions, each still decided on its own, in order.
 * Releases go first, then leaves, then slots freed are handed to the head of the line, then the
 * admits, which queue behind the waiters of their tier and above.
 * ARGV: 1 instanceId, 2 generation, 3 slotsPerInstance, 4 userMax (0 = off), 5 key base,
 * 6 reserved shares per tier, 7 most waiters, 8 nReleases, 9 nLeaves, 10 collect (1/0), then per
 * release (user, tier), per leave a ticket, per admit (user, tier, ticket ('' = no wait), most
 * waiters ahead it accepts (-1: any)). User '' = not tracked.
 * Releases never take a count below zero; a fenced instance's releases are dropped (its
 * re-registration writes the true count instead).
 * Returns {used, capacity, live, releaseStatus, {leave statuses}, {collected ticket, outcome...},
 * {admit statuses}, line length}; used/capacity are 0 when not computed (no admit, empty line).
 * Admit status: ok | dam_full | user_sessions | q:<position> | full:<line length> |
 * long:<position it would have> | a single fenced for every admit.
 */
const OPS_LUA = `${PRELUDE}
local userMax = tonumber(ARGV[4])
local maxWaiters = tonumber(ARGV[7])
local nrel, nleave = tonumber(ARGV[8]), tonumber(ARGV[9])
${tierArgs(6)}
${FMT}
${LINE_HELPERS}
${PUMP}
${SHED}
${LEAVE}
${COLLECT}
${NOW}
local registered = redis.call('HGET', KEYS[3], ARGV[1]) == ARGV[2]
local relStatus = 'ok'
if nrel > 0 then
  if not registered then
    relStatus = 'fenced'
  else
    local n = math.min(nrel, tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0'))
    if n > 0 then
      redis.call('HINCRBY', KEYS[2], ARGV[1], -n)
      freed(n)
    end
    for i = 11, 10 + 2 * nrel, 2 do
      userDec(KEYS[5], ARGV[i])
      tierAdd(KEYS[14], tonumber(ARGV[i + 1]), -1)
    end
  end
end
local li = 11 + 2 * nrel
local leaves = {}
for i = li, li + nleave - 1 do
  if registered then leaves[#leaves + 1] = leave(ARGV[i]) else leaves[#leaves + 1] = 'fenced' end
end
local collected = {}
if ARGV[10] == '1' and registered then collected = collect() end
local first = li + nleave
local lineLen = redis.call('ZCARD', KEYS[8])
if first > #ARGV and lineLen == 0 then return {0, 0, 0, relStatus, leaves, collected, {}, 0} end
${GLOBAL}
if lineLen > 0 then
  pump()
  lineLen = redis.call('ZCARD', KEYS[8])
end
local out = {}
if first <= #ARGV then
  local mine = redis.call('ZSCORE', KEYS[1], ARGV[1])
  if (not mine) or tonumber(mine) <= now or not registered then
    out = {'fenced'}
  else
    local granted = 0
    for i = first, #ARGV, 4 do
      local u, tier, ticket, maxAhead = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2], tonumber(ARGV[i + 3])
      local status
      if u ~= '' and userMax > 0 and tonumber(redis.call('HGET', KEYS[4], u) or '0') >= userMax then
        status = 'user_sessions'
      else
        local ahead = 0
        if lineLen > 0 then ahead = redis.call('ZCOUNT', KEYS[8], '-inf', '(' .. fmt((tier + 1) * SPAN)) end
        if ahead == 0 and admissible(tier) then
          userInc(KEYS[5], u)
          tierAdd(KEYS[14], tier, 1)
          used = used + 1
          granted = granted + 1
          status = 'ok'
        elseif ticket == '' then
          status = 'dam_full'
        else
          if lineLen >= maxWaiters and lineLen > 0 then
            local tail = redis.call('ZRANGE', KEYS[8], -1, -1, 'WITHSCORES')
            if math.floor(tonumber(tail[2]) / SPAN) > tier then
              shed(tail[1])
              lineLen = lineLen - 1
            end
          end
          if lineLen >= maxWaiters then
            status = 'full:' .. lineLen
          elseif maxAhead >= 0 and ahead > maxAhead then
            status = 'long:' .. (ahead + 1)
          else
            local seq = redis.call('INCR', KEYS[9])
            redis.call('ZADD', KEYS[8], fmt(tier * SPAN + seq), ticket)
            redis.call('HSET', KEYS[10], ticket, tier .. '|' .. u)
            userInc(KEYS[5], u)
            lineLen = lineLen + 1
            status = 'q:' .. (ahead + 1)
          end
        end
      end
      out[#out + 1] = status
    end
    if granted > 0 then
      redis.call('HINCRBY', KEYS[2], ARGV[1], granted)
      redis.call('HINCRBY', KEYS[7], ARGV[1], granted)
    end
  end
end
return {used, capacity, #live, relStatus, leaves, collected, out, lineLen}
`;

/** Replaces this instance's contribution to a pair of count hashes (global, per instance) with a JSON object. */
const REPLACE_COUNTS = `
local function replaceCounts(global, mine, json, extra)
  local old = redis.call('HGETALL', mine)
  for i = 1, #old, 2 do
    if redis.call('HINCRBY', global, old[i], -tonumber(old[i + 1])) <= 0 then redis.call('HDEL', global, old[i]) end
  end
  redis.call('DEL', mine)
  local counts = cjson.decode(json)
  for k, n in pairs(extra) do counts[k] = (counts[k] or 0) + n end
  for k, n in pairs(counts) do
    if n > 0 then
      redis.call('HSET', mine, k, n)
      redis.call('HINCRBY', global, k, n)
    end
  end
end
`;

/**
 * Heartbeat, registration and reaping in one call. ARGV: 1 instanceId, 2 generation ('' when not
 * registered), 3 slotsPerInstance, 4 held (this instance's count when it sent the beat), 5 key
 * base, 6 users (JSON object user -> count, or '' when unchanged), 7 userTracking ('1'/'0'),
 * 8 ttlMs, 9 okReplies (ok admit replies and collected grants the instance had received when it
 * sent the beat), 10 reserved shares per tier, 11 tiers (JSON tier -> sessions, or '' when
 * unchanged), 12 ranks wanted (1/0).
 * Admits sent before the beat run before it on the same connection; those that returned ok but
 * whose reply had not arrived are admits - okReplies, and slots granted to this instance's waiters
 * and not collected yet are in grants, so the true count is held + admits - okReplies + grants:
 * exact even under a steady stream of admits and handoffs. Reaps expired instances (this one
 * too, if it was presumed dead): their held counts, user and tier counts and tickets go. Slots
 * freed are handed to the head of the line.
 * Returns {status, generation, used, capacity, live, freed, line length, now, outcomes waiting
 * to be collected, {ticket, position | outcome, ...}, the next heartbeat expiry of another
 * instance (ms, 0: none)}; status ok | registered | fenced | need_users.
 */
const HEARTBEAT_LUA = `${PRELUDE}
local userMax = 0
${tierArgs(10)}
${LINE_HELPERS}
${PUMP}
${DROP_INSTANCE}
${RANKS}
${REPLACE_COUNTS}
${NOW}
local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, 64)
for _, d in ipairs(dead) do
  freed(dropInstance(d))
  redis.call('ZREM', KEYS[1], d)
  redis.call('HDEL', KEYS[2], d)
  redis.call('HDEL', KEYS[3], d)
  redis.call('HDEL', KEYS[7], d)
  local ukey = base .. ':iusers:' .. d
  local m = redis.call('HGETALL', ukey)
  for i = 1, #m, 2 do
    if redis.call('HINCRBY', KEYS[4], m[i], -tonumber(m[i + 1])) <= 0 then redis.call('HDEL', KEYS[4], m[i]) end
  end
  redis.call('DEL', ukey)
end
local status = 'ok'
local gen = ARGV[2]
if (not redis.call('ZSCORE', KEYS[1], ARGV[1])) or redis.call('HGET', KEYS[3], ARGV[1]) ~= gen then
  if (ARGV[7] == '1' and ARGV[6] == '') or (tiered and ARGV[11] == '') then return {'need_users', '', 0, 0, 0, 0, 0, 0, 0, {}, 0} end
  if gen == '' then status = 'registered' else status = 'fenced' end
  dropInstance(ARGV[1])
  gen = tostring(redis.call('INCR', KEYS[6]))
  redis.call('HSET', KEYS[3], ARGV[1], gen)
  redis.call('HSET', KEYS[7], ARGV[1], ARGV[9])
end
local inflight = tonumber(redis.call('HGET', KEYS[7], ARGV[1]) or ARGV[9]) - tonumber(ARGV[9])
local held = tonumber(ARGV[4]) + inflight + tonumber(redis.call('HGET', KEYS[12], ARGV[1]) or '0')
if held < 0 then held = 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[8]), ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], held)
if ARGV[6] ~= '' then replaceCounts(KEYS[4], KEYS[5], ARGV[6], {}) end
if tiered and ARGV[11] ~= '' then
  -- Slots granted and not collected yet are counted here, not in the instance's own numbers.
  local extra = {}
  local o = redis.call('HGETALL', KEYS[11])
  for i = 1, #o, 2 do
    if o[i + 1] == 'g' then
      local tier = tostring(parseEntry(redis.call('HGET', KEYS[10], o[i])))
      extra[tier] = (extra[tier] or 0) + 1
    end
  end
  replaceCounts(KEYS[13], KEYS[14], ARGV[11], extra)
  tierUsed = {}
end
${GLOBAL}
local lineLen = redis.call('ZCARD', KEYS[8])
if lineLen > 0 then
  pump()
  lineLen = redis.call('ZCARD', KEYS[8])
end
local r = {}
if ARGV[12] == '1' then r = ranks() end
local nextExpiry = 0
local soonest = redis.call('ZRANGE', KEYS[1], 0, 1, 'WITHSCORES')
for i = 1, #soonest, 2 do
  if soonest[i] ~= ARGV[1] then
    nextExpiry = tonumber(soonest[i + 1])
    break
  end
end
return {status, gen, used, capacity, #live, tonumber(redis.call('GET', KEYS[15]) or '0'), lineLen, now, redis.call('HLEN', KEYS[11]), r, nextExpiry}
`;

/**
 * Read-only view for /dam. ARGV: 3 slotsPerInstance (1, 2, 4, 5 unused).
 * Returns {used, capacity, {live ids}, line length, {tier, sessions, ...}, freed, now}.
 */
const STATUS_LUA = `${PRELUDE}
${NOW}
${GLOBAL}
return {used, capacity, live, redis.call('ZCARD', KEYS[8]), redis.call('HGETALL', KEYS[13]), tonumber(redis.call('GET', KEYS[15]) or '0'), now}
`;

/**
 * Leave the budget on a clean shutdown: this instance's tickets leave the line, its slots are
 * freed and handed to the waiters of the others. ARGV: 1 instanceId, 3 slotsPerInstance, 5 key
 * base, 6 reserved shares per tier.
 */
const DEREGISTER_LUA = `${PRELUDE}
local userMax = 0
${tierArgs(6)}
${LINE_HELPERS}
${PUMP}
${DROP_INSTANCE}
${NOW}
freed(dropInstance(ARGV[1]))
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('HDEL', KEYS[7], ARGV[1])
local m = redis.call('HGETALL', KEYS[5])
for i = 1, #m, 2 do
  if redis.call('HINCRBY', KEYS[4], m[i], -tonumber(m[i + 1])) <= 0 then redis.call('HDEL', KEYS[4], m[i]) end
end
redis.call('DEL', KEYS[5])
${GLOBAL}
pump()
return 'ok'
`;

/** The fifteen keys of the budget and its line, in the order the scripts read them (see the top of this file). */
export type BudgetKeys = [
  instances: string,
  held: string,
  generations: string,
  users: string,
  instanceUsers: string,
  generation: string,
  admits: string,
  line: string,
  arrivals: string,
  instanceTickets: string,
  instanceOutcomes: string,
  grants: string,
  tiers: string,
  instanceTiers: string,
  freed: string,
];

export const budgetOps = createScript<
  BudgetKeys,
  [
    instanceId: string,
    generation: string,
    slots: number,
    userMax: number,
    base: string,
    reserves: string,
    maxWaiters: number,
    releases: number,
    leaves: number,
    collect: '0' | '1',
    ...ops: Array<string | number>,
  ],
  [used: number, capacity: number, live: number, released: string, leaves: string[], collected: string[], admits: string[], lineLength: number]
>(OPS_LUA);

export const budgetHeartbeat = createScript<
  BudgetKeys,
  [
    instanceId: string,
    generation: string,
    slots: number,
    held: number,
    base: string,
    users: string,
    tracking: '0' | '1',
    ttlMs: number,
    okReplies: number,
    reserves: string,
    tiers: string,
    ranks: '0' | '1',
  ],
  [
    status: string,
    generation: string,
    used: number,
    capacity: number,
    live: number,
    freed: number,
    lineLength: number,
    now: number,
    outcomes: number,
    ranks: Array<string | number>,
    nextExpiry: number,
  ]
>(HEARTBEAT_LUA);

export const budgetStatus = createScript<
  BudgetKeys,
  [unused: '', unused2: '', slots: number, unused4: '', base: string],
  [used: number, capacity: number, live: string[], lineLength: number, tiers: string[], freed: number, now: number]
>(STATUS_LUA);

export const budgetDeregister = createScript<
  BudgetKeys,
  [instanceId: string, unused: '', slots: number, unused4: '', base: string, reserves: string],
  string
>(DEREGISTER_LUA);
