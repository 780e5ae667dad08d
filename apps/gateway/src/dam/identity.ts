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

/** A user as a verified credential says: the JWT's `sub`, and the claims later layers may use. */
export interface VerifiedIdentity {
  /** `jwt:<sub>`: what per-user limits key on. */
  userId: string;
  /** Claims kept from the JWT for what the identity may be given (a priority tier). Strings only. */
  claims: { tier?: string };
}

/** What a connection shows of its user, whatever the transport: an Express request fits. */
export interface Credentials {
  /** `Bearer <jwt>` (Socket.IO: made from the handshake's `auth.token`). */
  headers: { authorization?: string };
  /** The client's address as the trusted proxy saw it. */
  ip?: string;
  /** Already verified elsewhere (a stream ticket redeemed): wins over the header. */
  verified?: VerifiedIdentity;
}

/**
 * Verifies `Bearer <jwt>` (HS256, issuer and audience when set). Throws invalid_credentials for
 * anything that is not a valid token with a usable `sub`.
 */
export function verifyBearerJwt(header: string, o: IdentityOptions & { jwtSecret: string | KeyObject }): VerifiedIdentity {
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
  const payload = typeof claims === 'object' ? claims : {};
  const sub = payload.sub;
  if (typeof sub !== 'string' || sub.length === 0 || sub.length > 256) {
    throw new GatewayException(ErrorCode.InvalidCredentials, 'The JWT has no usable "sub".');
  }
  const tier: unknown = payload['tier'];
  return { userId: `jwt:${sub}`, claims: typeof tier === 'string' && tier.length <= 64 ? { tier } : {} };
}

/**
 * Who a request is, for per-user limits: the `sub` of a verified JWT (or of a redeemed ticket),
 * else (when enabled) the client IP as the trusted proxy saw it. Never an unverified header:
 * X-Forwarded-For is only believed from TRUST_PROXY addresses, through Express's req.ip (or
 * proxy-addr with the same setting for Socket.IO).
 */
export function resolveIdentity(req: Credentials, o: IdentityOptions): string | null {
  if (req.verified) return req.verified.userId;
  const secret = o.jwtSecret;
  if (secret !== undefined) {
    const header = req.headers.authorization;
    if (header === undefined) {
      if (o.jwtRequired) throw new GatewayException(ErrorCode.MissingToken, 'Send a JWT as "Authorization: Bearer <jwt>", or a stream ticket as ?ticket=.');
    } else {
      return verifyBearerJwt(header, { ...o, jwtSecret: secret }).userId;
    }
  }
  return o.limitByIp && req.ip ? `ip:${req.ip}` : null;
}
