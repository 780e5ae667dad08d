import type { CorsOptions } from '@nestjs/common/interfaces/external/cors-options.interface';
import type { GatewayConfig } from '../common/config/config';

/**
 * The CORS policy of CORS_ORIGINS, or null without it (no CORS at all). One object for the
 * framework's middleware and the fast path's, so both answer a browser alike. No credentials: the
 * API authenticates with bearer tokens, never with cookies.
 */
export function corsOptions(config: GatewayConfig): CorsOptions | null {
  if (!config.CORS_ORIGINS) return null;
  return {
    origin: config.CORS_ORIGINS.includes('*') ? '*' : config.CORS_ORIGINS,
    methods: ['GET', 'POST', 'DELETE'],
    allowedHeaders: ['Authorization', 'Content-Type', 'X-Request-Id', 'Last-Event-ID'],
    exposedHeaders: ['Retry-After', 'RateLimit', 'RateLimit-Policy', 'WWW-Authenticate', 'X-Request-Id', 'X-Instance-Id'],
    credentials: false,
    maxAge: 600,
  };
}
