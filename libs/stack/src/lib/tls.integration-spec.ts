import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { createServer, connect } from 'node:tls';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { ensureLocalCertificate } from './tls';

describe('the local TLS certificate (openssl)', () => {
  let dir = '';
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'td-tls-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('is made on first use, for the loopback names, signed by a local CA, with private keys only the owner reads', async () => {
    const c = await ensureLocalCertificate(join(dir, 'tls'));
    const text = execFileSync('openssl', ['x509', '-in', c.certFile, '-noout', '-text']).toString();
    expect(text).toMatch(/DNS:localhost, IP Address:127\.0\.0\.1, IP Address:0:0:0:0:0:0:0:1/);
    expect(text).toContain('TLS Web Server Authentication');
    expect(statSync(c.keyFile).mode & 0o077).toBe(0);
    expect(c.ca).toBe(readFileSync(c.caFile, 'utf8'));

    // A client that trusts only that CA accepts the server on 127.0.0.1.
    const server = createServer({ cert: readFileSync(c.certFile), key: readFileSync(c.keyFile) }, (s) => s.end('ok'));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    try {
      const got = await new Promise<string>((resolve, reject) => {
        const sock = connect({ host: '127.0.0.1', port: (server.address() as AddressInfo).port, ca: c.ca }, () => undefined);
        let body = '';
        sock.on('data', (d: Buffer) => (body += d.toString()));
        sock.on('end', () => resolve(body));
        sock.on('error', reject);
      });
      expect(got).toBe('ok');
    } finally {
      server.close();
    }
  });

  it('is kept while valid, and made again when part of it is missing', async () => {
    const first = await ensureLocalCertificate(join(dir, 'tls'));
    const firstCert = readFileSync(first.certFile, 'utf8');
    const again = await ensureLocalCertificate(join(dir, 'tls'));
    expect(readFileSync(again.certFile, 'utf8')).toBe(firstCert);
    expect(again.ca).toBe(first.ca);
    rmSync(first.keyFile);
    const remade = await ensureLocalCertificate(join(dir, 'tls'));
    expect(statSync(remade.keyFile).isFile()).toBe(true);
    expect(readFileSync(remade.certFile, 'utf8')).not.toBe(firstCert);
    expect(remade.ca).not.toBe(first.ca);
  });
});
