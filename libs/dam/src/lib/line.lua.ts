// Lua fragments of the waiting line and the tiers, composed into the budget's scripts
// (budget.scripts.ts), so that one script sees both the budget and the line: a slot released is
// handed to the head of the line inside the release, and an arrival queues behind the waiters.
//
// A ticket is `<n>@<instanceId>`: the instance holding the waiting connection. Its score in the
// line is tier x TIER_SPAN + arrival sequence (one counter for the cluster), so the line is
// served by tier, then first come first served across every instance. Per instance (same hash
// tag, derived from `base`): iline:<id> HASH ticket -> 'tier|user' (its unfinished tickets),
// outcomes:<id> HASH ticket -> 'g' (granted a slot) | 'x' (shed), notices:<id> LIST (a wake-up
// for its blocking pop), itiers:<id> HASH tier -> sessions. Global: grants HASH id -> slots
// granted and not yet collected by it, tiers HASH tier -> sessions, freed (slots freed, ever).
//
// Expects the locals `now`, `used`, `capacity` (see GLOBAL) and `base`, `reserves` and
// `tiered` (see TIER_ARGS), and the KEYS of budget.scripts.ts.

/** Scores per tier in the line; arrivals beyond 2^40 would spill into the next tier. */
export const TIER_SPAN = 2 ** 40;

/** Parses ARGV[i] ('0.2,0,0': the reserved share of each tier, highest first) into `reserves`. */
export const tierArgs = (i: number): string => `
local reserves = {}
local tiered = false
for r in string.gmatch(ARGV[${i}], '[^,]+') do
  reserves[#reserves + 1] = tonumber(r)
  if tonumber(r) > 0 then tiered = true end
end
`;

/** Helpers for users, tiers, tickets. userMax must be a local before this. */
export const LINE_HELPERS = `
local SPAN = ${TIER_SPAN}
local function userInc(iukey, u)
  if u == '' then return end
  redis.call('HINCRBY', KEYS[4], u, 1)
  redis.call('HINCRBY', iukey, u, 1)
end
local function userDec(iukey, u)
  if u ~= '' and tonumber(redis.call('HGET', iukey, u) or '0') > 0 then
    if redis.call('HINCRBY', iukey, u, -1) <= 0 then redis.call('HDEL', iukey, u) end
    if redis.call('HINCRBY', KEYS[4], u, -1) <= 0 then redis.call('HDEL', KEYS[4], u) end
  end
end
local tierUsed = {}
local function tierGet(t)
  if tierUsed[t] == nil then tierUsed[t] = tonumber(redis.call('HGET', KEYS[13], t) or '0') end
  return tierUsed[t]
end
local function tierAdd(itkey, t, d)
  if not tiered then return end
  if d < 0 and tonumber(redis.call('HGET', itkey, t) or '0') <= 0 then return end
  if redis.call('HINCRBY', itkey, t, d) <= 0 then redis.call('HDEL', itkey, t) end
  local g = redis.call('HINCRBY', KEYS[13], t, d)
  if g <= 0 then redis.call('HDEL', KEYS[13], t) end
  tierUsed[t] = math.max(0, g)
end
-- A session of tier t may take a slot only if the unused part of every higher tier's reserved
-- share stays free.
local function admissible(t)
  if used >= capacity then return false end
  if not tiered then return true end
  local keep = 0
  for h = 0, t - 1 do
    local r = math.floor((reserves[h + 1] or 0) * capacity)
    local u = tierGet(h)
    if r > u then keep = keep + r - u end
  end
  return used + 1 + keep <= capacity
end
local function ownerOf(t) return string.match(t, '@(.+)$') end
local function parseEntry(v)
  local tier, u = string.match(v or '', '^(%d+)|(.*)$')
  return tonumber(tier or '0'), u or ''
end
local woken = {}
local function wake(owner)
  if woken[owner] then return end
  woken[owner] = true
  local k = base .. ':notices:' .. owner
  if redis.call('LLEN', k) == 0 then redis.call('RPUSH', k, '1') end
end
local function freed(n)
  if n > 0 then redis.call('INCRBY', KEYS[15], n) end
end
`;

/**
 * Hands free slots to the head of the line while it is admissible: the slot is counted for the
 * ticket's instance at once (held), and as granted until that instance collects it. A ticket of
 * an instance whose heartbeat expired is dropped (its connection died with it).
 */
export const PUMP = `
local function pump()
  while used < capacity do
    local head = redis.call('ZRANGE', KEYS[8], 0, 0, 'WITHSCORES')
    if #head == 0 then return end
    local t = head[1]
    local tier = math.floor(tonumber(head[2]) / SPAN)
    local owner = ownerOf(t)
    local alive = redis.call('ZSCORE', KEYS[1], owner)
    if (not alive) or tonumber(alive) <= now then
      redis.call('ZREM', KEYS[8], t)
    else
      if not admissible(tier) then return end
      redis.call('ZREM', KEYS[8], t)
      redis.call('HSET', base .. ':outcomes:' .. owner, t, 'g')
      redis.call('HINCRBY', KEYS[2], owner, 1)
      redis.call('HINCRBY', KEYS[12], owner, 1)
      tierAdd(base .. ':itiers:' .. owner, tier, 1)
      used = used + 1
      wake(owner)
    end
  end
end
`;

/** Sheds ticket t (a lower tier's last waiter, to make room for a higher tier): its instance is told. */
export const SHED = `
local function shed(t)
  local owner = ownerOf(t)
  redis.call('ZREM', KEYS[8], t)
  local _, u = parseEntry(redis.call('HGET', base .. ':iline:' .. owner, t))
  userDec(base .. ':iusers:' .. owner, u)
  redis.call('HSET', base .. ':outcomes:' .. owner, t, 'x')
  wake(owner)
end
`;

/**
 * Leaves of this instance's tickets (the client went away, or its wait ran out): out of the line
 * at once; a slot granted meanwhile is released here and handed on. Status per ticket: left |
 * released (it had been granted) | shed | gone (unknown: reaped, or never joined).
 */
export const LEAVE = `
local function leave(t)
  local entry = redis.call('HGET', KEYS[10], t)
  local tier, u = parseEntry(entry)
  redis.call('HDEL', KEYS[10], t)
  if redis.call('ZREM', KEYS[8], t) == 1 then
    userDec(KEYS[5], u)
    return 'left'
  end
  local o = redis.call('HGET', KEYS[11], t)
  redis.call('HDEL', KEYS[11], t)
  if o == 'g' then
    if tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0') > 0 then redis.call('HINCRBY', KEYS[2], ARGV[1], -1) end
    if tonumber(redis.call('HGET', KEYS[12], ARGV[1]) or '0') > 0 then redis.call('HINCRBY', KEYS[12], ARGV[1], -1) end
    tierAdd(KEYS[14], tier, -1)
    userDec(KEYS[5], u)
    freed(1)
    return 'released'
  end
  if o == 'x' then return 'shed' end
  return 'gone'
end
`;

/**
 * Collects this instance's outcomes: every granted slot moves from granted to admitted-and-replied
 * (the admits count, so a heartbeat sent before the reply arrives still counts it; see the
 * heartbeat). Returns {ticket, outcome, ...}.
 */
export const COLLECT = `
local function collect()
  local all = redis.call('HGETALL', KEYS[11])
  if #all == 0 then return {} end
  local n = 0
  for i = 1, #all, 2 do
    redis.call('HDEL', KEYS[10], all[i])
    if all[i + 1] == 'g' then n = n + 1 end
  end
  redis.call('DEL', KEYS[11])
  if n > 0 then
    redis.call('HINCRBY', KEYS[12], ARGV[1], -n)
    redis.call('HINCRBY', KEYS[7], ARGV[1], n)
  end
  return all
end
`;

/** Removes everything of instance d from the line (reaped, or deregistering); returns the slots it held. */
export const DROP_INSTANCE = `
local function dropInstance(d)
  local tickets = redis.call('HKEYS', base .. ':iline:' .. d)
  for _, t in ipairs(tickets) do redis.call('ZREM', KEYS[8], t) end
  local it = base .. ':itiers:' .. d
  local m = redis.call('HGETALL', it)
  for i = 1, #m, 2 do
    if redis.call('HINCRBY', KEYS[13], m[i], -tonumber(m[i + 1])) <= 0 then redis.call('HDEL', KEYS[13], m[i]) end
  end
  redis.call('DEL', base .. ':iline:' .. d, base .. ':outcomes:' .. d, base .. ':notices:' .. d, it)
  redis.call('HDEL', KEYS[12], d)
  return tonumber(redis.call('HGET', KEYS[2], d) or '0')
end
`;

/**
 * This instance's unfinished tickets as {ticket, position (1 = next) or 'g' | 'x' (an outcome not
 * collected yet), ...}. A ticket it does not find in Redis is missing from the reply.
 */
export const RANKS = `
local function ranks()
  local out = {}
  for _, t in ipairs(redis.call('HKEYS', KEYS[10])) do
    local r = redis.call('ZRANK', KEYS[8], t)
    if r then
      out[#out + 1] = t
      out[#out + 1] = r + 1
    else
      local o = redis.call('HGET', KEYS[11], t)
      if o then
        out[#out + 1] = t
        out[#out + 1] = o
      end
    end
  end
  return out
end
`;
