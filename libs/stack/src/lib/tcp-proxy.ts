import { createServer, connect, type Server, type Socket } from 'node:net';

interface Pipe {
  client: Socket;
  upstream: Socket;
  /** Replies to this client are held until then (epoch ms). */
  holdUntil: number;
  held: Buffer[];
  flush: NodeJS.Timeout | null;
  /** The last bytes the client sent, so a marker split across two chunks is still seen. */
  tail: string;
}

/**
 * A TCP proxy in front of Redis for fault tests: it can cut every connection (and refuse new
 * ones) like a network partition, or hold replies (on one connection once its client sent a
 * marker, for a time; or on every connection until released), so a command runs in Redis but its
 * reply comes late.
 */
export class TcpProxy {
  private readonly pipes = new Set<Pipe>();
  private cutOff = false;
  private rule: { marker: string; ms: number } | null = null;
  private holding = false;

  private constructor(
    private readonly server: Server,
    readonly port: number,
  ) {}

  static async start(targetHost: string, targetPort: number): Promise<TcpProxy> {
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const proxy = new TcpProxy(server, (server.address() as { port: number }).port);
    server.on('connection', (client) => proxy.accept(client, targetHost, targetPort));
    return proxy;
  }

  /** Redis URL through this proxy for a Redis URL without it. */
  url(redisUrl: string): string {
    const u = new URL(redisUrl);
    u.hostname = '127.0.0.1';
    u.port = String(this.port);
    return u.toString();
  }

  /** Destroys every connection and refuses new ones until resume(). */
  cut(): void {
    this.cutOff = true;
    for (const p of this.pipes) this.drop(p);
  }

  resume(): void {
    this.cutOff = false;
  }

  /** From now on: a client that sends `marker` gets no reply on that connection for `ms`. */
  holdRepliesAfter(marker: string, ms: number): void {
    this.rule = { marker, ms };
  }

  /** From now on every reply, on every connection, is held (in order) until releaseReplies(). */
  holdReplies(): void {
    this.holding = true;
  }

  /** Reply chunks held now. */
  get heldReplies(): number {
    let n = 0;
    for (const p of this.pipes) n += p.held.length;
    return n;
  }

  /** Sends what holdReplies() held; a connection still in a timed hold sends it when that ends. */
  releaseReplies(): void {
    this.holding = false;
    for (const p of this.pipes) if (p.flush === null) this.flushHeld(p);
  }

  async stop(): Promise<void> {
    this.cut();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private accept(client: Socket, host: string, port: number): void {
    if (this.cutOff) {
      client.destroy();
      return;
    }
    const upstream = connect(port, host);
    const p: Pipe = { client, upstream, holdUntil: 0, held: [], flush: null, tail: '' };
    this.pipes.add(p);
    client.on('data', (chunk: Buffer) => {
      const text = p.tail + chunk.toString('latin1');
      if (this.rule && text.includes(this.rule.marker)) {
        p.holdUntil = Date.now() + this.rule.ms;
        this.rule = null;
      }
      p.tail = text.slice(-256);
      upstream.write(chunk);
    });
    upstream.on('data', (chunk: Buffer) => this.reply(p, chunk));
    for (const s of [client, upstream]) {
      s.on('error', () => this.drop(p));
      s.on('close', () => this.drop(p));
    }
  }

  private reply(p: Pipe, chunk: Buffer): void {
    const wait = p.holdUntil - Date.now();
    if (!this.holding && wait <= 0 && p.held.length === 0) {
      p.client.write(chunk);
      return;
    }
    // Order is kept: once anything is held, later replies queue behind it.
    p.held.push(chunk);
    if (this.holding) return;
    p.flush ??= setTimeout(() => {
      p.flush = null;
      this.flushHeld(p);
    }, Math.max(0, wait));
  }

  private flushHeld(p: Pipe): void {
    for (const c of p.held.splice(0)) p.client.write(c);
  }

  private drop(p: Pipe): void {
    if (!this.pipes.delete(p)) return;
    if (p.flush) clearTimeout(p.flush);
    p.client.destroy();
    p.upstream.destroy();
  }
}
