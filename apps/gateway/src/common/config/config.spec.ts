import { ConfigError, loadConfig } from './config';

describe('loadConfig', () => {
  it('gives the documented defaults for an empty environment', () => {
    const c = loadConfig({});
    expect(c.PORT).toBe(3000);
    expect(c.LISTEN_BACKLOG).toBe(511);
    expect(c.REDIS_URL).toBe('redis://127.0.0.1:6379');
    expect(c.GATEWAY_WORKERS).toBe(1);
    expect(c.SSE_PING_MS).toBe(15_000);
    expect(c.QUESTION_MAX_CHARS).toBe(4_000);
    expect(c.BODY_MAX_BYTES).toBe(16_384);
  });

  it('coerces numbers and treats empty strings as unset', () => {
    const c = loadConfig({ PORT: '8081', GATEWAY_WORKERS: '', SSE_PING_MS: '500' });
    expect(c.PORT).toBe(8081);
    expect(c.GATEWAY_WORKERS).toBe(1);
    expect(c.SSE_PING_MS).toBe(500);
  });

  it('reports every bad value at once', () => {
    let err: unknown;
    try {
      loadConfig({ PORT: 'eighty', REDIS_URL: 'http://x', SSE_PING_MS: '60000', LOG_LEVEL: 'loud' });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    const problems = (err as ConfigError).problems.join('\n');
    for (const key of ['PORT', 'REDIS_URL', 'SSE_PING_MS', 'LOG_LEVEL']) {
      expect(problems).toContain(`${key}=`);
    }
    expect((err as ConfigError).problems).toHaveLength(4);
  });

  it('refuses an instance name that would break key and channel names', () => {
    expect(() => loadConfig({ INSTANCE_NAME: 'a b' })).toThrow(ConfigError);
  });
});

describe('loadConfig: the dam', () => {
  it('defaults to enforce with 1,000 slots per instance, local fallback, limits by IP off', () => {
    const c = loadConfig({});
    expect(c.DAM_MODE).toBe('enforce');
    expect(c.DAM_SLOTS_PER_INSTANCE).toBe(1_000);
    expect(c.DAM_INSTANCE_CEILING).toBeUndefined();
    expect(c.DAM_REDIS_TIMEOUT_MS).toBe(20);
    expect(c.DAM_REDIS_FALLBACK).toBe('local');
    expect(c.DAM_LIMIT_BY_IP).toBe(false);
  });

  it('reports a heartbeat TTL that is not longer than the heartbeat', () => {
    expect(() => loadConfig({ DAM_HEARTBEAT_MS: '1000', DAM_HEARTBEAT_TTL_MS: '1000' })).toThrow(/DAM_HEARTBEAT_TTL_MS/);
  });

  it('refuses a short JWT secret and a bad mode together', () => {
    try {
      loadConfig({ AUTH_JWT_SECRET: 'short', DAM_MODE: 'maybe', DAM_LIMIT_BY_IP: 'perhaps' });
      throw new Error('no error');
    } catch (e) {
      expect((e as ConfigError).problems.map((p) => p.split('=')[0])).toEqual(
        expect.arrayContaining(['AUTH_JWT_SECRET', 'DAM_MODE', 'DAM_LIMIT_BY_IP']),
      );
    }
  });
});

describe('loadConfig: drain', () => {
  it('defaults to a 1 s grace and a 20 s in-flight limit', () => {
    const c = loadConfig({});
    expect(c.DRAIN_GRACE_MS).toBe(1_000);
    expect(c.DRAIN_INFLIGHT_MS).toBe(20_000);
  });

  it('refuses an in-flight limit shorter than the grace', () => {
    expect(() => loadConfig({ DRAIN_GRACE_MS: '5000', DRAIN_INFLIGHT_MS: '1000' })).toThrow(/DRAIN_INFLIGHT_MS/);
    expect(loadConfig({ DRAIN_GRACE_MS: '0', DRAIN_INFLIGHT_MS: '0' }).DRAIN_INFLIGHT_MS).toBe(0);
  });
});

describe('loadConfig: CORS', () => {
  it('has no CORS by default', () => {
    expect(loadConfig({}).CORS_ORIGINS).toBeUndefined();
  });

  it('reads a comma-separated list of origins', () => {
    expect(loadConfig({ CORS_ORIGINS: 'https://app.example.com, http://localhost:5173' }).CORS_ORIGINS).toEqual([
      'https://app.example.com',
      'http://localhost:5173',
    ]);
    expect(loadConfig({ CORS_ORIGINS: '*' }).CORS_ORIGINS).toEqual(['*']);
  });

  it('refuses what is not an origin (a path, a scheme-less host)', () => {
    expect(() => loadConfig({ CORS_ORIGINS: 'https://app.example.com/path' })).toThrow(/CORS_ORIGINS/);
    expect(() => loadConfig({ CORS_ORIGINS: 'app.example.com' })).toThrow(/CORS_ORIGINS/);
    expect(() => loadConfig({ CORS_ORIGINS: ' , ' })).toThrow(/CORS_ORIGINS/);
  });
});

describe('loadConfig: the waiting line and the tiers', () => {
  it('defaults: 10,000 waiters, a minute offered at most, no tiers', () => {
    const c = loadConfig({});
    expect(c.DAM_QUEUE_MAX).toBe(10_000);
    expect(c.DAM_QUEUE_MAX_WAIT_MS).toBe(60_000);
    expect(c.DAM_TIERS).toBeUndefined();
  });

  it('parses tiers highest first, with anonymous last', () => {
    expect(loadConfig({ DAM_TIERS: 'pro:20:30, free:0:10' }).DAM_TIERS).toEqual([
      { name: 'pro', sessions: 0.2, ai: 0.3 },
      { name: 'free', sessions: 0, ai: 0.1 },
      { name: 'anonymous', sessions: 0, ai: 0 },
    ]);
    expect(loadConfig({ DAM_TIERS: 'pro:10,anonymous:5' }).DAM_TIERS).toEqual([
      { name: 'pro', sessions: 0.1, ai: 0 },
      { name: 'anonymous', sessions: 0.05, ai: 0 },
    ]);
  });

  it('reports bad tiers', () => {
    for (const bad of ['Pro:10', 'pro:101', 'pro:10:x', 'pro,pro', 'anonymous,pro', 'a:60,b:50', 'pro:1:2:3']) {
      expect(() => loadConfig({ DAM_TIERS: bad })).toThrow(/DAM_TIERS/);
    }
    expect(() => loadConfig({ DAM_QUEUE_MAX_WAIT_MS: '500' })).toThrow(/DAM_QUEUE_MAX_WAIT_MS/);
  });
});
