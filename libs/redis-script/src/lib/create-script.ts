import { createHash } from 'node:crypto';

/** What a script needs of a connection: ioredis's Redis and Cluster both fit. */
export interface ScriptClient {
  defineCommand(name: string, definition: { lua: string; numberOfKeys?: number }): void;
}

/** An ioredis pipeline or multi: the script is queued, its reply comes from exec(). */
export interface ScriptPipeline {
  eval(script: string, numberOfKeys: number, ...args: Array<string | number>): unknown;
}

/**
 * One Lua script with its typed call: `Keys` and `Args` name what the script reads as KEYS and
 * ARGV, `Reply` what it returns. Call it on a connection, or queue it on a pipeline.
 */
export interface RedisScript<Keys extends readonly string[], Args extends ReadonlyArray<string | number>, Reply> {
  (redis: ScriptClient, keys: Keys, args: Args): Promise<Reply>;
  /** Queues the script on a pipeline; its reply is in exec()'s results, in order. */
  queue(pipeline: ScriptPipeline, keys: Keys, args: Args): void;
  readonly lua: string;
  readonly sha: string;
}

/**
 * Makes the typed caller of a Lua script (after redis-semaphore's createEval). It runs through
 * ioredis's own script command, defined once per connection: EVAL the first time on each socket,
 * EVALSHA after, so a script's first call is never overtaken by the commands sent behind it
 * (an EVALSHA answered NOSCRIPT and sent again would be). The script lives beside its caller,
 * in the file that calls this.
 */
export function createScript<Keys extends readonly string[], Args extends ReadonlyArray<string | number>, Reply>(
  lua: string,
): RedisScript<Keys, Args, Reply> {
  const sha = createHash('sha1').update(lua).digest('hex');
  const name = `tdScript_${sha.slice(0, 16)}`;
  const defined = new WeakSet<ScriptClient>();
  const call = async (redis: ScriptClient, keys: Keys, args: Args): Promise<Reply> => {
    if (!defined.has(redis)) {
      // No numberOfKeys: it is the first argument of each call.
      redis.defineCommand(name, { lua });
      defined.add(redis);
    }
    const command = (redis as unknown as Record<string, (...a: Array<string | number>) => Promise<unknown>>)[name] as (
      ...a: Array<string | number>
    ) => Promise<unknown>;
    return (await command.call(redis, keys.length, ...keys, ...args)) as Reply;
  };
  // Queued on a pipeline, the whole script goes along (EVAL): nothing can overtake it.
  const queue = (pipeline: ScriptPipeline, keys: Keys, args: Args): void => {
    pipeline.eval(lua, keys.length, ...keys, ...args);
  };
  return Object.assign(call, { queue, lua, sha });
}
