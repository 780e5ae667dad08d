// Lua beside its caller (ai-bridge.client.ts): the AI-capacity gate and the enqueue in one step,
// so two instances can never both squeeze a question into the last second of allowed wait.

/**
 * KEYS: question stream. ARGV: consumer group, maxWaitMs (0 = no gate), throughput (answers/s;
 * 0 = unknown), maxLen, answers being streamed, extra wait in ms (before any answer can start, the
 * line or not: a Retry-After the workers honour, a model slower to its first token than usual),
 * then the question's field/value pairs.
 * Depth = the questions ahead of a new one: entries not yet delivered (lag) + delivered and not
 * yet acknowledged (pending) - those already being answered (pending until their answer ends).
 * Returns {'ok', waitMs, depth, entryId} or {'overloaded', waitMs, depth} (waitMs -1 = unknown).
 */
export const GATED_ASK_LUA = `
local depth = 0
local ok, groups = pcall(redis.call, 'XINFO', 'GROUPS', KEYS[1])
if ok then
  for _, g in ipairs(groups) do
    local f = {}
    for i = 1, #g, 2 do f[g[i]] = g[i + 1] end
    if f['name'] == ARGV[1] then
      local lag = tonumber(f['lag'])
      if lag == nil then lag = redis.call('XLEN', KEYS[1]) end
      depth = math.max(0, lag + tonumber(f['pending'] or 0) - tonumber(ARGV[5]))
    end
  end
end
local maxWait = tonumber(ARGV[2])
local rate = tonumber(ARGV[3])
local wait = tonumber(ARGV[6])
if depth > 0 then
  if rate > 0 then wait = wait + math.floor(depth * 1000 / rate) else wait = -1 end
end
if maxWait > 0 and (wait < 0 or wait > maxWait) then return {'overloaded', wait, depth} end
local fields = {}
for i = 7, #ARGV do fields[#fields + 1] = ARGV[i] end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[4], '*', unpack(fields))
return {'ok', wait, depth, id}
`;
