import { createScript } from '@traffic-dam/redis-script';

// Lua beside its typed callers (used by ai-bridge.client.ts). An enqueue is keyed by its message
// id: the outcome key holds the entry id once it is queued, or 'refused' once a gateway decided
// it never will be. Both keys share a slot with the stream, so each script runs on Redis Cluster.

/** The outcome key of a question, in the slot of its stream. */
export function outcomeKey(stream: string, messageId: string): string {
  const tag = /\{([^}]+)\}/.exec(stream)?.[1] ?? stream;
  return `td:asked:{${tag}}:${messageId}`;
}

/**
 * The AI-capacity gate and the enqueue in one step, so two instances can never both squeeze a
 * question into the last second of allowed wait; run twice (a resend after a reconnect) it queues
 * once. KEYS: stream, outcome. ARGV: consumer group, maxWaitMs (0 = no gate; -1 = no gate and
 * no depth either), throughput
 * (answers/s; 0 = unknown), maxLen, answers being streamed, outcome TTL ms, extra wait in ms
 * (before any answer can start, the line or not: a Retry-After the workers honour, a model slower
 * to its first token than usual), then the question's field/value pairs. Depth = the questions ahead of a new one: entries not yet delivered (lag) +
 * delivered and not yet acknowledged (pending) - those already being answered.
 *
 * The wait is the longer of two estimates: depth / throughput, and what the line measurably takes:
 * the age of its oldest undelivered entry (its stream id is its arrival time; the Redis clock) plus
 * the questions the workers hold in their own lines / throughput. The first is right as soon as the
 * line forms (a burst fills it in an instant); the second holds the gate to its promise when the
 * throughput it was given is too high (a new worker trusted at its declared capacity while it
 * delivers less): an entry that has waited past the limit is a fact, whatever the rate says.
 * Returns {'ok', waitMs, depth, entryId, dequeued}, {'overloaded', waitMs, depth, '', rateWaitMs}
 * (waitMs -1 = unknown; rateWaitMs: the first estimate alone, what the line's length proves) or
 * {'refused', 0, 0} when a gateway had settled it as refused first. dequeued counts every question
 * that ever left the line (started, or dropped before it), as the group reads it: entries read -
 * pending + answering; its growth from here is how far this one moved up (-1: no gate).
 */
const GATED_ASK_LUA = `
local prior = redis.call('GET', KEYS[2])
if prior == 'refused' then return {'refused', 0, 0} end
if prior then return {'ok', 0, 0, prior} end
local maxWait = tonumber(ARGV[2])
local depth = 0
local wait = 0
local dequeued = -1
if maxWait >= 0 then
  local inLine = 0
  local headAge = 0
  local ok, groups = pcall(redis.call, 'XINFO', 'GROUPS', KEYS[1])
  if ok then
    for _, g in ipairs(groups) do
      local f = {}
      for i = 1, #g, 2 do f[g[i]] = g[i + 1] end
      if f['name'] == ARGV[1] then
        local lag = tonumber(f['lag'])
        if lag == nil then lag = redis.call('XLEN', KEYS[1]) end
        inLine = math.max(0, tonumber(f['pending'] or 0) - tonumber(ARGV[5]))
        depth = math.max(0, lag + tonumber(f['pending'] or 0) - tonumber(ARGV[5]))
        dequeued = (tonumber(f['entries-read']) or 0) - tonumber(f['pending'] or 0) + tonumber(ARGV[5])
        if lag > 0 then
          local head = redis.call('XRANGE', KEYS[1], '(' .. f['last-delivered-id'], '+', 'COUNT', 1)
          if head[1] then
            local t = redis.call('TIME')
            local nowMs = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
            headAge = math.max(0, nowMs - tonumber(string.match(head[1][1], '^(%d+)')))
          end
        end
      end
    end
  end
  local rate = tonumber(ARGV[3])
  local extra = tonumber(ARGV[7])
  wait = extra
  local byRate = extra
  if depth > 0 then
    if rate > 0 then
      byRate = extra + math.floor(depth * 1000 / rate)
      wait = math.max(byRate, extra + headAge + math.floor(inLine * 1000 / rate))
    else
      wait = -1
      byRate = -1
    end
  end
  if maxWait > 0 and (wait < 0 or wait > maxWait) then return {'overloaded', wait, depth, '', byRate} end
end
local fields = {}
for i = 8, #ARGV do fields[#fields + 1] = ARGV[i] end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[4], '*', unpack(fields))
redis.call('SET', KEYS[2], id, 'PX', ARGV[6])
return {'ok', wait, depth, id, dequeued}
`;

export const gatedAsk = createScript<
  [stream: string, outcome: string],
  [group: string, maxWaitMs: number, ratePerSec: number, maxLen: number, answering: number, outcomeTtlMs: number, extraWaitMs: number, ...fields: string[]],
  // The fifth: dequeued when 'ok', rateWaitMs when 'overloaded'.
  [status: 'ok' | 'overloaded' | 'refused', waitMs: number, depth: number, entryId?: string, dequeuedOrRateWaitMs?: number]
>(GATED_ASK_LUA);

/**
 * Decides a question whose enqueue did not answer in time. Sent after the enqueue on the same
 * connection, it runs after it: it returns the entry id if the question was queued, else marks
 * it 'refused' (a late or resent enqueue then queues nothing) and returns 'refused'.
 * KEYS: outcome. ARGV: outcome TTL ms.
 */
const SETTLE_LUA = `
local prior = redis.call('GET', KEYS[1])
if prior then return prior end
redis.call('SET', KEYS[1], 'refused', 'PX', ARGV[1])
return 'refused'
`;

export const settleAsk = createScript<[outcome: string], [outcomeTtlMs: number], string>(SETTLE_LUA);
