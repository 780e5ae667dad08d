import { execFile } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

/** A certificate for the edge on loopback, signed by a CA made for this machine only. */
export interface LocalCertificate {
  dir: string;
  /** The local CA's certificate: what a client trusts (curl --cacert, NODE_EXTRA_CA_CERTS). */
  caFile: string;
  /** The server's certificate (for 127.0.0.1, ::1 and localhost) and its private key. */
  certFile: string;
  keyFile: string;
  /** caFile's PEM text. */
  ca: string;
}

function files(dir: string): Omit<LocalCertificate, 'ca'> {
  return { dir, caFile: join(dir, 'ca.crt'), certFile: join(dir, 'server.crt'), keyFile: join(dir, 'server.key') };
}

async function stillValid(f: Omit<LocalCertificate, 'ca'>): Promise<boolean> {
  if (![f.caFile, f.certFile, f.keyFile].every((p) => existsSync(p))) return false;
  try {
    // Good for at least another day: a stack started now must not see it expire.
    await run('openssl', ['x509', '-checkend', '86400', '-noout', '-in', f.certFile]);
    await run('openssl', ['verify', '-CAfile', f.caFile, f.certFile]);
    return true;
  } catch {
    return false;
  }
}

/**
 * The certificate in `dir`, made with openssl on first use (and again when it is about to
 * expire): a local CA (10 years) and a server certificate (1 year) with the loopback names.
 * ECDSA P-256 keys, what a production edge would choose: a full handshake costs the server a
 * fraction of an RSA-2048 one. Written to a temporary folder first, so a half-made set is never
 * used.
 */
export async function ensureLocalCertificate(dir: string): Promise<LocalCertificate> {
  const want = files(dir);
  if (!(await stillValid(want))) {
    mkdirSync(dirname(dir), { recursive: true });
    const tmp = `${dir}.tmp-${process.pid}-${Date.now()}`;
    mkdirSync(tmp, { recursive: true, mode: 0o700 });
    try {
      const t = files(tmp);
      const caKey = join(tmp, 'ca.key');
      const csr = join(tmp, 'server.csr');
      const ext = join(tmp, 'server.ext');
      const key = (out: string) => run('openssl', ['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', out]);
      await key(caKey);
      await run('openssl', [
        'req', '-x509', '-new', '-key', caKey, '-sha256', '-days', '3650',
        '-subj', '/CN=Traffic Dam local CA (this machine only)',
        '-addext', 'basicConstraints=critical,CA:TRUE,pathlen:0',
        '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
        '-out', t.caFile,
      ]);
      await key(t.keyFile);
      await run('openssl', ['req', '-new', '-key', t.keyFile, '-subj', '/CN=localhost', '-out', csr]);
      writeFileSync(
        ext,
        [
          'basicConstraints=critical,CA:FALSE',
          'keyUsage=critical,digitalSignature',
          'extendedKeyUsage=serverAuth',
          'subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1',
          '',
        ].join('\n'),
      );
      const serial = `0x${Date.now().toString(16)}${Math.floor(Math.random() * 0xffff).toString(16)}`;
      await run('openssl', [
        'x509', '-req', '-in', csr, '-CA', t.caFile, '-CAkey', caKey, '-set_serial', serial,
        '-days', '365', '-sha256', '-extfile', ext, '-out', t.certFile,
      ]);
      for (const p of [caKey, t.keyFile]) chmodSync(p, 0o600);
      rmSync(csr);
      rmSync(ext);
      rmSync(dir, { recursive: true, force: true });
      renameSync(tmp, dir);
    } catch (err) {
      rmSync(tmp, { recursive: true, force: true });
      throw new Error(`could not make the local TLS certificate with openssl: ${err instanceof Error ? err.message : String(err)}`);
    }
  }
  return { ...want, ca: readFileSync(want.caFile, 'utf8') };
}
