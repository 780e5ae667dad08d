import { createServer, connect, type Server, type Socket } from 'node:net';

/**
 * A TCP relay between the browser and nginx that can drop every connection it carries at once,
 * as a network change does to a phone: the browser sees its streams break, reconnects through the
 * relay, and nginx and the gateways see the old connections close.
 */
export class CutProxy {
  private readonly pairs = new Set<[Socket, Socket]>();

  private constructor(
    private readonly server: Server,
    readonly port: number,
  ) {}

  static async start(host: string, port: number): Promise<CutProxy> {
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const proxy = new CutProxy(server, (server.address() as { port: number }).port);
    server.on('connection', (client) => {
      const upstream = connect(port, host);
      const pair: [Socket, Socket] = [client, upstream];
      proxy.pairs.add(pair);
      client.pipe(upstream);
      upstream.pipe(client);
      const drop = (): void => {
        proxy.pairs.delete(pair);
        client.destroy();
        upstream.destroy();
      };
      for (const s of pair) {
        s.on('error', drop);
        s.on('close', drop);
      }
    });
    return proxy;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** Drops every connection now (new ones are taken as before); returns how many it dropped. */
  cut(): number {
    const n = this.pairs.size;
    for (const [client, upstream] of [...this.pairs]) {
      client.destroy();
      upstream.destroy();
    }
    this.pairs.clear();
    return n;
  }

  async stop(): Promise<void> {
    this.cut();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
