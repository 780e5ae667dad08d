/**
 * HTTPS at the edge (the seed ran its load tests over TLS, and its first bottleneck was nginx
 * doing handshakes). Off by default in the stack; `npm start -- --tls` turns it on.
 */
export interface EdgeTls {
  /** PEM files of the server certificate (chain) and its private key. */
  certFile: string;
  keyFile: string;
  /**
   * HTTP/2 on the TLS listener, negotiated by ALPN. Default true. It helps SSE in browsers: with
   * HTTP/1.1 a browser holds at most 6 connections per origin, so a 7th tab's EventSource waits;
   * over HTTP/2 every stream and every question share one connection (and one handshake).
   */
  http2?: boolean;
}

/** Cached sessions: about 4,000 per MB, so 10 MB keeps every client of a 1,000-slot edge many times over. */
const SESSION_CACHE_MB = 10;

/** The template's TLS placeholders: empty strings for plain HTTP. */
export function renderEdgeTls(tls?: EdgeTls): Record<'LISTEN_OPTIONS' | 'TLS', string> {
  if (!tls) return { LISTEN_OPTIONS: '', TLS: '' };
  for (const [name, v] of Object.entries({ certFile: tls.certFile, keyFile: tls.keyFile })) {
    // A path with a space or semicolon would end the nginx directive early.
    if (!v || /[\s;'"{}]/.test(v)) throw new Error(`edge TLS: ${name} must be a path without spaces, quotes, braces or semicolons, got ${JSON.stringify(v)}`);
  }
  return {
    LISTEN_OPTIONS: tls.http2 === false ? ' ssl' : ' ssl http2',
    TLS: [
      `    ssl_certificate ${tls.certFile};`,
      `    ssl_certificate_key ${tls.keyFile};`,
      '    ssl_protocols TLSv1.2 TLSv1.3;',
      // Resumption: a client that comes back within the timeout skips the certificate and its
      // signature, and with TLS 1.2 the key exchange too (tickets, and the shared cache for
      // clients that send a session id; TLS 1.3 resumes with a ticket and still runs an ECDHE).
      // Full handshakes are what cost the seed's edge its CPU.
      `    ssl_session_cache shared:td_tls:${SESSION_CACHE_MB}m;`,
      '    ssl_session_timeout 1h;',
      '    ssl_session_tickets on;',
    ].join('\n'),
  };
}
