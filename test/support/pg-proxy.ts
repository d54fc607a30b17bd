// A TCP proxy in front of PostgreSQL or PgBouncer that injects faults the network can cause:
// losing the reply to a COMMIT (the server committed, the client never hears it), refusing new
// connections, and cutting every open one.
import { createServer, connect, type Server, type Socket } from 'node:net';

export class PgProxy {
  private conns = new Set<Socket>();
  private refuse = false;
  private armed: (() => void) | null = null;
  private constructor(
    private readonly server: Server,
    readonly port: number,
  ) {}

  static async start(targetPort: number): Promise<PgProxy> {
    let proxy!: PgProxy;
    const server = createServer((client) => proxy.accept(client, targetPort));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    proxy = new PgProxy(server, (server.address() as { port: number }).port);
    return proxy;
  }

  url(database: string, user = 'strata', password = 'strata-test-pw'): string {
    return `postgres://${user}:${password}@127.0.0.1:${this.port}/${database}`;
  }

  /** The next COMMIT is forwarded, the server's reply is swallowed and both sockets are cut. */
  loseNextCommitReply(): Promise<void> {
    return new Promise((resolve) => (this.armed = resolve));
  }

  /** While down, new connections are closed at once and open ones are cut. */
  setDown(down: boolean): void {
    this.refuse = down;
    if (down) this.cutAll();
  }

  cutAll(): void {
    for (const s of this.conns) s.destroy();
    this.conns.clear();
  }

  close(): Promise<void> {
    this.cutAll();
    return new Promise((r) => this.server.close(() => r()));
  }

  private accept(client: Socket, targetPort: number): void {
    if (this.refuse) return void client.destroy();
    const server = connect(targetPort, '127.0.0.1');
    this.conns.add(client).add(server);
    const end = () => {
      client.destroy();
      server.destroy();
      this.conns.delete(client);
      this.conns.delete(server);
    };
    client.on('error', end).on('close', end);
    server.on('error', end).on('close', end);
    let pending = Buffer.alloc(0);
    let started = false;
    let swallow: (() => void) | null = null;
    client.on('data', (chunk: Buffer) => {
      pending = Buffer.concat([pending, chunk]);
      // Frame client messages: the startup packet has no type byte; the rest are type + int32 length.
      for (;;) {
        const head = started ? 5 : 4;
        if (pending.length < head) break;
        const len = started ? pending.readInt32BE(1) + 1 : pending.readInt32BE(0);
        if (pending.length < len) break;
        const msg = pending.subarray(0, len);
        pending = pending.subarray(len);
        if (!started) {
          started = msg.readInt32BE(4) !== 80877103; // an SSLRequest is followed by the real startup
        } else if (this.armed && msg[0] === 0x51 && /^\s*commit\s*;?\s*$/i.test(msg.subarray(5, len - 1).toString())) {
          swallow = this.armed;
          this.armed = null;
        }
        server.write(msg);
      }
    });
    server.on('data', (chunk: Buffer) => {
      if (swallow) {
        const done = swallow;
        swallow = null;
        end();
        done();
        return;
      }
      client.write(chunk);
    });
  }
}
