import { Counter, Registry } from 'prom-client';
import type { PinoLogger } from 'nestjs-pino';
import type { AiClient } from '@traffic-dam/ai-bridge';
import { waitFor } from '@traffic-dam/stack';
import { AdaptiveDeadline } from '../common/redis/adaptive-deadline';
import { loadConfig } from '../common/config/config';
import { ErrorCode, GatewayException } from '../common/errors';
import { RedisFailures } from '../common/redis/redis-failures';
import { SessionCleanup } from './session-cleanup';
import type { SessionMetrics } from './session-metrics';
import { SessionRegistry } from './session-registry';
import type { AuthorizeResult, SessionRepository } from './session.repository';
import { SessionsService } from './sessions.service';
import type { WaitingRoom } from './waiting-room';

/** A promise settled from outside: a Redis reply that comes when the test says. */
function later<T>(): { promise: Promise<T>; resolve: (v: T) => void; reject: (e: Error) => void } {
  let resolve!: (v: T) => void;
  let reject!: (e: Error) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/**
 * The session store as Redis would answer it, each reply held until the test lets it go: the
 * clean-up's batches (removeMany) and a DELETE's own removal (remove) can be answered apart.
 */
class HeldRepository {
  readonly batches: Array<{ ids: string[]; reply: ReturnType<typeof later<Array<{ inflight: string | null }>>> }> = [];
  readonly removals: Array<{ id: string; reply: ReturnType<typeof later<string | null>> }> = [];
  owner: AuthorizeResult = { status: 'ok', ownerInstanceId: 'gw-owner', transport: 'sse' };

  authorize(): Promise<AuthorizeResult> {
    return Promise.resolve(this.owner);
  }

  remove(id: string): Promise<string | null> {
    const reply = later<string | null>();
    this.removals.push({ id, reply });
    return reply.promise;
  }

  removeMany(ids: string[]): Promise<Array<{ inflight: string | null }>> {
    const reply = later<Array<{ inflight: string | null }>>();
    this.batches.push({ ids, reply });
    return reply.promise;
  }
}

describe('SessionsService.close: a DELETE for a session held by another instance', () => {
  const config = loadConfig({});
  const quiet = { warn: () => undefined, info: () => undefined, debug: () => undefined } as unknown as PinoLogger;
  let repo: HeldRepository;
  let cleanup: SessionCleanup;
  let cancelled: string[];
  let told: Array<[string, string]>;
  let service: SessionsService;

  beforeEach(() => {
    repo = new HeldRepository();
    cancelled = [];
    told = [];
    const ai = { cancel: (id: string) => (cancelled.push(id), Promise.resolve()) } as unknown as AiClient;
    const metrics = { cleanupFailures: { inc: () => undefined } } as unknown as SessionMetrics;
    const sessions = repo as unknown as SessionRepository;
    cleanup = new SessionCleanup(config, quiet, sessions, ai, metrics);
    const errors = new Counter({ name: 'errors', help: 'errors', labelNames: ['kind', 'op'], registers: [new Registry()] });
    // The real learnt deadline, at its 50 ms floor: a reply held past it is a 503.
    const deadline = new AdaptiveDeadline(config.REDIS_REQUEST_TIMEOUT_MS, 1_000);
    service = new SessionsService(
      config,
      'gw-here',
      deadline,
      quiet,
      new SessionRegistry(),
      sessions,
      cleanup,
      undefined as unknown as WaitingRoom,
      undefined as unknown as SessionMetrics,
      new RedisFailures(errors, quiet),
    );
    service.registerReach('sse', { closeRemote: async (owner, id) => void told.push([owner, id]) });
  });

  afterEach(() => cleanup.onApplicationShutdown());

  it('is confirmed by its own removal, however long the clean-up batch in flight takes', async () => {
    // Streams that ended here: their batch is with Redis and not answered while the DELETE runs.
    cleanup.close('ended-here', Date.now() + 60_000);
    await waitFor('the batch went out', () => repo.batches.length === 1, { pollMs: 1 });

    const closing = service.close('held-elsewhere', 'token');
    await waitFor('its removal went out', () => repo.removals.length === 1, { pollMs: 1 });
    expect(repo.removals[0]?.id).toBe('held-elsewhere');
    repo.removals[0]?.reply.resolve('q-in-flight');
    await expect(closing).resolves.toBeUndefined();
    // Removed first, then the owner told to end the stream.
    expect(told).toEqual([['gw-owner', 'held-elsewhere']]);
    // Its question is cancelled by the clean-up, once the batch before it is answered.
    repo.batches[0]?.reply.resolve([{ inflight: null }]);
    await waitFor('its question cancelled', () => cancelled.length === 1, { pollMs: 1 });
    expect(cancelled).toEqual(['q-in-flight']);
    expect(repo.batches).toHaveLength(1);
  });

  it('answers 503 redis_unavailable past the deadline; the removal that fails later is retried by the clean-up', async () => {
    const closing = service.close('held-elsewhere', 'token');
    await waitFor('its removal went out', () => repo.removals.length === 1, { pollMs: 1 });
    const refused = await closing.then(
      () => null,
      (err: unknown) => err,
    );
    expect(refused).toBeInstanceOf(GatewayException);
    expect((refused as GatewayException).code).toBe(ErrorCode.RedisUnavailable);
    expect(told).toEqual([]);

    repo.removals[0]?.reply.reject(new Error('Connection is closed.'));
    await waitFor('the clean-up took it over', () => repo.batches.length === 1, { pollMs: 1 });
    expect(repo.batches[0]?.ids).toEqual(['held-elsewhere']);
    repo.batches[0]?.reply.resolve([{ inflight: null }]);
    await waitFor('confirmed', () => cleanup.pending === 0, { pollMs: 1 });
  });

  it('a removal answered after the deadline still cancels the question it held', async () => {
    const closing = service.close('held-elsewhere', 'token');
    await waitFor('its removal went out', () => repo.removals.length === 1, { pollMs: 1 });
    await expect(closing).rejects.toMatchObject({ code: ErrorCode.RedisUnavailable });
    repo.removals[0]?.reply.resolve('q-late');
    await waitFor('its question cancelled', () => cancelled.length === 1, { pollMs: 1 });
    expect(cancelled).toEqual(['q-late']);
    expect(repo.batches).toEqual([]);
  });
});
