export { ManagedChild, httpOk, waitFor } from './lib/child';
export type { ChildOptions } from './lib/child';
export { renderNginxConfig, startNginx } from './lib/nginx';
export type { NginxHandle, NginxOptions } from './lib/nginx';
export { freePort } from './lib/ports';
export { pingRedis, startLocalRedis, startTestRedis } from './lib/redis';
export type { LocalRedisOptions, RedisHandle } from './lib/redis';
export { Stack, repoRoot } from './lib/stack';
export type { GatewayHandle, StackOptions, WorkerHandle } from './lib/stack';
