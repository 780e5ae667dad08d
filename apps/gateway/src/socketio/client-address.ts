import type { IncomingMessage } from 'node:http';
import proxyaddr from 'proxy-addr';

/**
 * The client's address of a Socket.IO handshake, believed from X-Forwarded-For only through the
 * TRUST_PROXY addresses, exactly as Express's req.ip does for HTTP (same setting, same rules).
 */
export function clientAddress(trustProxy: string): (req: IncomingMessage) => string {
  const trust = compileTrust(trustProxy);
  return (req) => proxyaddr(req, trust);
}

// Express's compileTrust for a setting given as a string.
function compileTrust(value: string): (addr: string, i: number) => boolean {
  if (value === 'true') return () => true;
  if (value === 'false') return () => false;
  if (/^\d+$/.test(value)) {
    const hops = Number(value);
    return (_addr, i) => i < hops;
  }
  return proxyaddr.compile(value.split(',').map((v) => v.trim()));
}
