// An S3 outage in the middle of uploads: a proxy in front of the S3 server that, while `down`, reads
// part of each PUT's body and then cuts the connection (the server never sees a complete request).
import { createServer, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface S3Outage {
  endpoint: string;
  down: boolean;
  /** PUT requests cut so far. */
  cut: number;
  stop(): Promise<void>;
}

export async function s3Outage(upstream: string): Promise<S3Outage> {
  const up = new URL(upstream);
  const state: S3Outage = { endpoint: '', down: false, cut: 0, stop: async () => {} };
  const server: Server = createServer((req, res) => {
    if (state.down && req.method === 'PUT') {
      req.once('data', () => {
        state.cut++;
        req.socket.destroy();
      });
      return;
    }
    const p = request({ hostname: up.hostname, port: up.port, method: req.method, path: req.url, headers: req.headers }, (r) => {
      res.writeHead(r.statusCode!, r.headers);
      r.pipe(res);
    });
    p.on('error', () => res.destroy());
    req.pipe(p);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  state.endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  state.stop = () => new Promise<void>((r) => server.close(() => r()));
  return state;
}
