import { createHash } from 'node:crypto';

/** What a script needs of a connection: ioredis's Redis and Cluster both fit. */
export interface ScriptClient {
  evalsha(sha: string, numberOfKeys: number, ...args: Array<string | number>): Promise<unknown>;
  eval(script: string, numberOfKeys: number, ...args: Array<string | number>): Promise<unknown>;
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
 * Makes the typed caller of a Lua script (after redis-semaphore's createEval): EVALSHA, and the
 * whole script with EVAL only when Redis does not have it yet (NOSCRIPT: it did not run). The
 * script lives beside its caller, in the file that calls this.
 */
export function createScript<Keys extends readonly string[], Args extends ReadonlyArray<string | number>, Reply>(
  lua: string,
): RedisScript<Keys, Args, Reply> {
  const sha = createHash('sha1').update(lua).digest('hex');
  const call = async (redis: ScriptClient, keys: Keys, args: Args): Promise<Reply> => {
    try {
      return (await redis.evalsha(sha, keys.length, ...keys, ...args)) as Reply;
    } catch (err) {
      if (!(err instanceof Error) || !err.message.startsWith('NOSCRIPT')) throw err;
      return (await redis.eval(lua, keys.length, ...keys, ...args)) as Reply;
    }
  };
  // On a pipeline the reply of EVALSHA cannot be retried in place, so the script text goes along.
  const queue = (pipeline: ScriptPipeline, keys: Keys, args: Args): void => {
    pipeline.eval(lua, keys.length, ...keys, ...args);
  };
  return Object.assign(call, { queue, lua, sha });
}
