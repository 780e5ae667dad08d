// Lua beside its caller (dead-letters.ts).

/**
 * Writes one dead letter, also when Redis is at its memory limit (maxmemory with noeviction
 * refuses every other write): a dead letter is small and rare, and the only record of an accepted
 * question that got no answer, so `allow-oom` lets it through.
 * KEYS: dead-letter stream. ARGV: maxLen (approximate), then the entry's field/value pairs.
 * Returns the entry id.
 */
export const DEAD_LETTER_LUA = `#!lua flags=allow-oom
return redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', unpack(ARGV, 2))
`;
