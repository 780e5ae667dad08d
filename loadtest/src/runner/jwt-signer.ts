import { createSecretKey, type KeyObject } from 'node:crypto';
import jwt from 'jsonwebtoken';

/** One HS256 JWT per user (sub = user id), as the gateway's per-user limits expect; signed once each. */
export class JwtSigner {
  private readonly tokens = new Map<string, string>();
  // Made once: given a string, jsonwebtoken first tries it as a private key and builds a key object
  // per sign, which took most of a core when a scenario starts 1,100 users at once.
  private readonly key: KeyObject | undefined;

  constructor(secret: string | undefined) {
    this.key = secret ? createSecretKey(Buffer.from(secret, 'utf8')) : undefined;
  }

  /** The user's JWT, or undefined when users are anonymous. */
  tokenFor(user: string): string | undefined {
    if (!this.key) return undefined;
    let t = this.tokens.get(user);
    if (!t) {
      t = jwt.sign({ sub: user }, this.key, { algorithm: 'HS256', expiresIn: '6h' });
      this.tokens.set(user, t);
    }
    return t;
  }
}
