import type { KeyObject } from 'node:crypto';
import jwt from 'jsonwebtoken';
import { ErrorCode, GatewayException } from '../common/errors';

export interface IdentityOptions {
  /**
   * The HS256 secret. Give it as a KeyObject made once (createSecretKey): from a string,
   * jsonwebtoken builds a key on every verify, after first trying it as a public key, which was
   * the gateway's largest single cost under a burst of connections.
   */
  jwtSecret?: string | KeyObject;
  jwtRequired: boolean;
  jwtIssuer?: string;
  jwtAudience?: string;
  /** Key per-user limits on the client IP when no verified identity exists. */
  limitByIp: boolean;
}

/** What a connection shows of its user, whatever the transport: an Express request fits. */
export interface Credentials {
  /** `Bearer <jwt>` (Socket.IO: made from the handshake's `auth.token`). */
  headers: { authorization?: string };
  /** The client's address as the trusted proxy saw it. */
  ip?: string;
}

/**
 * Who a request is, for per-user limits: the `sub` of a verified JWT, else (when enabled) the
 * client IP as the trusted proxy saw it. Never an unverified header: X-Forwarded-For is only
 * believed from TRUST_PROXY addresses, through Express's req.ip (or proxy-addr with the same setting for Socket.IO).
 */
export function resolveIdentity(req: Credentials, o: IdentityOptions): string | null {
  if (o.jwtSecret !== undefined) {
    const header = req.headers.authorization;
    if (header === undefined) {
      if (o.jwtRequired) throw new GatewayException(ErrorCode.MissingToken, 'Send a JWT as "Authorization: Bearer <jwt>".');
    } else {
      const m = /^Bearer[ ]+(\S+)\s*$/i.exec(header);
      if (!m) throw new GatewayException(ErrorCode.InvalidCredentials, 'The Authorization header is not a bearer token.');
      let claims: jwt.JwtPayload | string;
      try {
        claims = jwt.verify(m[1] as string, o.jwtSecret, {
          algorithms: ['HS256'],
          issuer: o.jwtIssuer,
          audience: o.jwtAudience,
          clockTolerance: 5,
        });
      } catch (err) {
        const why = err instanceof jwt.TokenExpiredError ? 'The JWT has expired.' : 'The JWT is not valid.';
        throw new GatewayException(ErrorCode.InvalidCredentials, why);
      }
      const sub = typeof claims === 'object' ? claims.sub : undefined;
      if (typeof sub !== 'string' || sub.length === 0 || sub.length > 256) {
        throw new GatewayException(ErrorCode.InvalidCredentials, 'The JWT has no usable "sub".');
      }
      return `jwt:${sub}`;
    }
  }
  return o.limitByIp && req.ip ? `ip:${req.ip}` : null;
}
