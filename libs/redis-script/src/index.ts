export { createScript } from './lib/create-script';
export type { RedisScript, ScriptClient, ScriptPipeline } from './lib/create-script';
