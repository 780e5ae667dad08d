import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { renderNginxConfig } from './nginx';
import { renderEdgeLimits } from './edge-limits';
import { renderEdgeTls } from './edge-tls';
import { repoRoot } from './stack';

function render(tls: Parameters<typeof renderEdgeTls>[0]): string {
  return renderNginxConfig(readFileSync(join(repoRoot(), 'infra/nginx/nginx.conf.template'), 'utf8'), {
    PREFIX: '/tmp/td',
    LISTEN: '127.0.0.1:8443',
    UPSTREAM_SERVERS: '    server 127.0.0.1:3000;',
    WORKER_CONNECTIONS: '1024',
    ACCESS_LOG_REFUSALS: '0',
    WEB_ROOT: '/tmp/td/web',
    ...renderEdgeLimits(),
    ...renderEdgeTls(tls),
  });
}

describe('edge TLS (nginx)', () => {
  it('is off by default: a plain HTTP listener and no ssl directive', () => {
    expect(renderEdgeTls()).toEqual({ LISTEN_OPTIONS: '', TLS: '' });
    const conf = render(undefined);
    expect(conf).toContain('listen 127.0.0.1:8443;');
    expect(conf).not.toMatch(/ssl/);
  });

  it('serves HTTPS with HTTP/2, the given certificate, and session resumption by tickets and a shared cache', () => {
    const conf = render({ certFile: '/c/server.crt', keyFile: '/c/server.key' });
    expect(conf).toContain('listen 127.0.0.1:8443 ssl http2;');
    expect(conf).toContain('ssl_certificate /c/server.crt;');
    expect(conf).toContain('ssl_certificate_key /c/server.key;');
    expect(conf).toContain('ssl_protocols TLSv1.2 TLSv1.3;');
    expect(conf).toMatch(/ssl_session_cache shared:td_tls:\d+m;/);
    expect(conf).toContain('ssl_session_tickets on;');
    expect(conf).toMatch(/ssl_session_timeout \S+;/);
  });

  it('can leave HTTP/2 out', () => {
    expect(renderEdgeTls({ certFile: '/a', keyFile: '/b', http2: false }).LISTEN_OPTIONS).toBe(' ssl');
  });

  it('refuses paths that would break the directive', () => {
    expect(() => renderEdgeTls({ certFile: '/a b/c.crt', keyFile: '/k' })).toThrow(/certFile/);
    expect(() => renderEdgeTls({ certFile: '/c', keyFile: '/k;evil' })).toThrow(/keyFile/);
    expect(() => renderEdgeTls({ certFile: '', keyFile: '/k' })).toThrow(/certFile/);
  });
});
