import { z } from 'zod';

const int = (def: number, min: number, max: number) =>
  z.coerce.number().int().min(min).max(max).default(def);

/** Every setting of the gateway, read from the environment once at boot. Documented in README.md. */
const fields = z.object({
  HOST: z.string().min(1).default('127.0.0.1'),
  PORT: int(3000, 0, 65535),
  // The kernel's accept queue (capped by net.core.somaxconn). Node's and nginx's 511, chosen with
  // the opening burst in mind: with 4,096 nothing was dropped, but every request of a burst waited
  // in one line behind every stream open and refusals got slower (BENCHMARKS.md, S0's opening).
  LISTEN_BACKLOG: int(511, 1, 65_535),
  REDIS_URL: z.url({ protocol: /^rediss?$/ }).default('redis://127.0.0.1:6379'),
  GATEWAY_WORKERS: int(1, 1, 64),
  INSTANCE_NAME: z
    .string()
    .regex(/^[A-Za-z0-9_.-]{1,40}$/, 'letters, digits, _ . - only, at most 40')
    .optional(),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  TRUST_PROXY: z.string().min(1).default('loopback'),
  // Browser origins allowed to call the API cross-origin, comma-separated; unset: no CORS at all.
  CORS_ORIGINS: z
    .string()
    .transform((v) => v.split(',').map((o) => o.trim()).filter((o) => o.length > 0))
    .pipe(z.array(z.string().regex(/^(\*|https?:\/\/[A-Za-z0-9.-]+(:\d{1,5})?)$/, 'origins like https://app.example.com[:port], or *')).min(1))
    .optional(),
  // Refusals decided without Redis (draining, the instance at its ceiling, the breaker open, a
  // known AI overload) answered on the raw request, before the framework: the same answer at a
  // fraction of the cost. false: through the framework like any request (to compare, or to rule it out).
  FAST_REFUSALS: z.stringbool().default(true),
  SSE_PING_MS: int(15_000, 100, 15_000),
  // A stream ticket (POST /chat/tickets) is good for one GET /chat/stream within this long.
  STREAM_TICKET_TTL_MS: int(30_000, 100, 600_000),
  // A dropped SSE stream's session waits this long for its client to come back (Last-Event-ID);
  // then its slot returns and its question is cancelled. 0: no resume, the drop ends it.
  SSE_RESUME_MS: int(5_000, 0, 600_000),
  // Events each SSE session keeps for a resume.
  SSE_RESUME_EVENTS: int(1_024, 16, 1_000_000),
  QUESTION_MAX_CHARS: int(4_000, 1, 100_000),
  BODY_MAX_BYTES: int(16_384, 256, 1_048_576),
  QUESTION_DEADLINE_MS: int(30_000, 100, 600_000),
  DAM_SESSION_MAX_MS: int(1_800_000, 500, 86_400_000),
  DAM_SESSION_IDLE_MS: int(120_000, 200, 86_400_000),
  AI_QUESTION_STREAM: z.string().min(1).default('td:questions'),
  AI_QUESTION_STREAM_MAXLEN: int(100_000, 100, 10_000_000),
  // Drain on SIGTERM: sessions stay open DRAIN_GRACE_MS (load balancers see readiness fall),
  // then end with `expired: draining` as soon as nothing is in flight on them; an answer still
  // running DRAIN_INFLIGHT_MS after the signal is cut and dead-lettered (reason draining).
  DRAIN_GRACE_MS: int(1_000, 0, 120_000),
  DRAIN_INFLIGHT_MS: int(20_000, 0, 600_000),
  REDIS_REQUEST_TIMEOUT_MS: int(50, 5, 10_000),
  DAM_MAX_QUEUE_WAIT_MS: int(2_000, 0, 600_000),
  AI_WORKER_REFRESH_MS: int(500, 50, 60_000),
  AI_SWEEP_MS: int(2_000, 100, 600_000),
  DAM_BREAKER_WINDOW_MS: int(10_000, 100, 600_000),
  DAM_BREAKER_MIN_VOLUME: int(20, 1, 1_000_000),
  DAM_BREAKER_ERROR_RATIO: z.coerce.number().gt(0).max(1).default(0.5),
  DAM_BREAKER_OPEN_MS: int(5_000, 50, 600_000),
  DAM_BREAKER_POLL_MS: int(250, 10, 10_000),
  DAM_BREAKER_PROBE_TIMEOUT_MS: int(5_000, 100, 120_000),
  DAM_MODE: z.enum(['enforce', 'shadow', 'off']).default('enforce'),
  DAM_SLOTS_PER_INSTANCE: int(1_000, 1, 1_000_000),
  DAM_INSTANCE_CEILING: z.coerce.number().int().min(1).max(1_000_000).optional(),
  DAM_HEARTBEAT_MS: int(500, 50, 60_000),
  DAM_HEARTBEAT_TTL_MS: int(2_500, 100, 600_000),
  DAM_REDIS_TIMEOUT_MS: int(20, 1, 5_000),
  DAM_REDIS_FALLBACK: z.enum(['local', 'reject', 'admit']).default('local'),
  DAM_USER_MAX_SESSIONS: int(5, 0, 1_000_000),
  DAM_USER_QUESTIONS: int(60, 0, 1_000_000),
  DAM_USER_QUESTION_WINDOW_SEC: int(60, 1, 86_400),
  DAM_LIMIT_BY_IP: z.stringbool().default(false),
  // The waiting line (opt-in per request: ?wait=N or Prefer: wait=N; DAM_QUEUE_MAX=0 turns it
  // off). DAM_QUEUE_MAX_WAIT_MS is the longest wait offered, for a slot and for a question.
  DAM_QUEUE_MAX: int(10_000, 0, 1_000_000),
  DAM_QUEUE_MAX_WAIT_MS: int(60_000, 1_000, 600_000),
  // Priority tiers, highest first: name[:sessions %[:AI %]] (reserved shares); anonymous is always last.
  DAM_TIERS: z
    .string()
    .transform((v, ctx) => parseTiers(v, ctx))
    .optional(),
  AUTH_JWT_SECRET: z.string().min(32, 'at least 32 characters').optional(),
  AUTH_JWT_REQUIRED: z.stringbool().optional(),
  AUTH_JWT_ISSUER: z.string().min(1).optional(),
  AUTH_JWT_AUDIENCE: z.string().min(1).optional(),
});

const schema = fields.superRefine((c, ctx) => {
  if (c.DAM_HEARTBEAT_TTL_MS <= c.DAM_HEARTBEAT_MS) {
    ctx.addIssue({ code: 'custom', path: ['DAM_HEARTBEAT_TTL_MS'], message: 'must be longer than DAM_HEARTBEAT_MS' });
  }
  if (c.DRAIN_INFLIGHT_MS < c.DRAIN_GRACE_MS) {
    ctx.addIssue({ code: 'custom', path: ['DRAIN_INFLIGHT_MS'], message: 'must be at least DRAIN_GRACE_MS' });
  }
  if (c.AUTH_JWT_REQUIRED && !c.AUTH_JWT_SECRET) {
    ctx.addIssue({ code: 'custom', path: ['AUTH_JWT_REQUIRED'], message: 'needs AUTH_JWT_SECRET' });
  }
});

export type GatewayConfig = Readonly<z.infer<typeof schema>>;

/** One priority tier: its name (a JWT's `tier` claim) and the shares reserved for it against every lower tier. */
export interface TierConfig {
  name: string;
  /** Share of the session budget, 0 to 1. */
  sessions: number;
  /** Share of the AI queue's room (the longest wait offered at the measured rate), 0 to 1. */
  ai: number;
}

/** The tier of anyone without a verified identity: always the lowest. */
export const ANONYMOUS_TIER = 'anonymous';

/** `pro:20:30,free:0:10` -> tiers, highest first, anonymous appended (or last if listed). */
function parseTiers(v: string, ctx: z.RefinementCtx): TierConfig[] {
  const tiers: TierConfig[] = [];
  for (const part of v.split(',').map((p) => p.trim()).filter((p) => p.length > 0)) {
    const [name = '', sessions = '0', ai = '0', ...rest] = part.split(':');
    const pct = (x: string): number => (/^\d{1,3}(\.\d+)?$/.test(x) && Number(x) <= 100 ? Number(x) / 100 : NaN);
    if (!/^[a-z0-9_-]{1,32}$/.test(name) || rest.length > 0 || Number.isNaN(pct(sessions)) || Number.isNaN(pct(ai))) {
      ctx.addIssue({ code: 'custom', message: `"${part}" is not name[:sessions %[:AI %]] (name: a-z 0-9 _ -, percents 0 to 100)` });
      return [];
    }
    tiers.push({ name, sessions: pct(sessions), ai: pct(ai) });
  }
  if (new Set(tiers.map((t) => t.name)).size !== tiers.length) ctx.addIssue({ code: 'custom', message: 'a tier is named twice' });
  const anon = tiers.findIndex((t) => t.name === ANONYMOUS_TIER);
  if (anon >= 0 && anon !== tiers.length - 1) ctx.addIssue({ code: 'custom', message: `${ANONYMOUS_TIER} is the lowest tier: list it last or not at all` });
  if (anon < 0) tiers.push({ name: ANONYMOUS_TIER, sessions: 0, ai: 0 });
  for (const k of ['sessions', 'ai'] as const) {
    if (tiers.reduce((a, t) => a + t[k], 0) > 1 + 1e-9) ctx.addIssue({ code: 'custom', message: `the ${k} shares add up to more than 100%` });
  }
  if (tiers.length > 8) ctx.addIssue({ code: 'custom', message: 'at most 8 tiers' });
  return tiers;
}

export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`invalid configuration:\n  ${problems.join('\n  ')}`);
    this.name = 'ConfigError';
  }
}

/** Validates the whole environment and reports every bad value in one error. */
export function loadConfig(env: NodeJS.ProcessEnv): GatewayConfig {
  // An empty variable means "not set", as a shell user expects from `FOO= npm start`.
  const present = Object.fromEntries(
    Object.keys(fields.shape)
      .filter((k) => env[k] !== undefined && env[k] !== '')
      .map((k) => [k, env[k]]),
  );
  const parsed = schema.safeParse(present);
  if (!parsed.success) {
    throw new ConfigError(
      parsed.error.issues.map((i) => `${i.path.join('.')}=${JSON.stringify(env[String(i.path[0])])}: ${i.message}`),
    );
  }
  return Object.freeze(parsed.data);
}

export const GATEWAY_CONFIG = Symbol('GATEWAY_CONFIG');
