/** The edge: nginx's CPU per new connection, plain HTTP and TLS with and without resumption. */
import { join } from 'node:path';
import { ensureLocalCertificate } from '@traffic-dam/stack';
import { connectLoop, type ConnectMode } from './clients';
import { Meters, log, type BenchContext } from './bench-context';
import { childPids } from './proc';
import type { EdgeRow } from './report';

/** Closed loops of new connections: enough to keep one nginx worker busy if the client can. */
const LOOPS = 16;

export async function edge(ctx: BenchContext): Promise<EdgeRow[]> {
  await ctx.fresh();
  const upstream = await ctx.procs.bare({});
  const cert = await ensureLocalCertificate(join(ctx.dir, 'tls'));
  const plain = await ctx.procs.nginx([`127.0.0.1:${upstream.port}`]);
  const secure = await ctx.procs.nginx([`127.0.0.1:${upstream.port}`], { certFile: cert.certFile, keyFile: cert.keyFile, ca: cert.ca });
  const kinds: Array<{ label: string; url: string; mode: ConnectMode; v: 'TLSv1.2' | 'TLSv1.3' }> = [
    { label: 'plain HTTP', url: plain.url, mode: 'plain', v: 'TLSv1.3' },
    { label: 'TLS 1.3, full handshake', url: secure.url, mode: 'tls-full', v: 'TLSv1.3' },
    { label: 'TLS 1.3, resumed (ticket)', url: secure.url, mode: 'tls-resumed', v: 'TLSv1.3' },
    { label: 'TLS 1.2, full handshake', url: secure.url, mode: 'tls-full', v: 'TLSv1.2' },
    { label: 'TLS 1.2, resumed', url: secure.url, mode: 'tls-resumed', v: 'TLSv1.2' },
  ];
  const rows: EdgeRow[] = [];
  try {
    for (const k of kinds) {
      const u = new URL(k.url);
      const handle = k.mode === 'plain' ? plain : secure;
      const master = handle.child.pid as number;
      const m = new Meters({ nginx: () => [master, ...childPids(master)] });
      log(`   ${k.label}: ${LOOPS} loops, ${ctx.opt.warmupMs / 1_000} s warm-up + ${ctx.opt.edgeSeconds} s`);
      // /admin is answered 404 by nginx itself: the connection and its handshake are the cost.
      const r = await connectLoop(u.hostname, Number(u.port), { mode: k.mode, maxVersion: k.v, ca: cert.ca, path: '/admin/bench', concurrency: LOOPS, warmupMs: ctx.opt.warmupMs, seconds: ctx.opt.edgeSeconds, window: m });
      rows.push({
        connection: k.label,
        perSec: r.perSec,
        nginxUsPerConn: m.micros('nginx') / r.ops,
        nginxCores: m.cores('nginx'),
        clientCores: m.clientCores,
        latency: r.latency,
        resumedShare: r.resumedShare,
        tally: r.tally,
      });
      const total = Object.values(r.tally).reduce((a, b) => a + b, 0);
      if ((r.tally['404'] ?? 0) < 0.99 * total) ctx.notes.push(`edge, ${k.label}: not every connection got nginx's 404 (${JSON.stringify(r.tally)})`);
      if (k.mode === 'tls-resumed' && r.resumedShare < 0.99) ctx.notes.push(`edge, ${k.label}: only ${(r.resumedShare * 100).toFixed(1)}% of the connections resumed`);
      if (k.mode === 'tls-full' && r.resumedShare > 0) ctx.notes.push(`edge, ${k.label}: ${(r.resumedShare * 100).toFixed(1)}% resumed although no session was offered`);
    }
  } finally {
    await ctx.procs.stop(secure.child);
    await ctx.procs.stop(plain.child);
    await ctx.procs.stop(upstream.child);
  }
  return rows;
}
