// redlock 5.0.0-beta.2 ships types, but its package exports map has no "types" entry, so
// TypeScript's node16/nodenext resolution cannot see them. The part of its API used here.
declare module 'redlock' {
  import type { EventEmitter } from 'node:events';

  export interface Lock {
    readonly expiration: number;
    release(): Promise<unknown>;
  }

  export interface Settings {
    driftFactor: number;
    retryCount: number;
    retryDelay: number;
    retryJitter: number;
    automaticExtensionThreshold: number;
  }

  export default class Redlock extends EventEmitter {
    constructor(clients: Iterable<unknown>, settings?: Partial<Settings>);
    acquire(resources: string[], duration: number, settings?: Partial<Settings>): Promise<Lock>;
  }
}
