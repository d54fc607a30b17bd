// A stand-in for what s3rver lacks (it cannot run here otherwise): S3 Glacier's restore protocol and
// bucket lifecycle configuration, as a proxy in front of s3rver. Everything else goes through to
// the real server. Following the S3 documentation:
//   - GET of a GLACIER or DEEP_ARCHIVE object with no completed restore: 403 InvalidObjectState;
//   - POST ?restore: 202 Accepted when a restore starts, 409 RestoreAlreadyInProgress while one runs,
//     200 OK when the object is already restored;
//   - HEAD while a restore runs: x-amz-restore: ongoing-request="true"; after it completes:
//     ongoing-request="false", expiry-date="<http date>";
//   - PUT/GET ?lifecycle: the configuration is kept and returned.
// A restore completes after `headsToComplete` HEAD requests for the object (the polls).
import { createServer, request, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface GlacierStandIn {
  endpoint: string;
  /** RestoreObject requests received, by key (with the request body). */
  restores: { key: string; body: string }[];
  lifecycle: Map<string, string>;
  /** Object Lock headers of the requests that carried them (PutObject or CreateMultipartUpload). */
  objectLocks: { key: string; mode: string; until: string }[];
  stop(): Promise<void>;
}

const GLACIER = new Set(['GLACIER', 'DEEP_ARCHIVE']);

export async function glacierStandIn(upstream: string, o: { headsToComplete?: number } = {}): Promise<GlacierStandIn> {
  const up = new URL(upstream);
  const state = new Map<string, { heads: number; done: boolean }>();
  const restores: { key: string; body: string }[] = [];
  const lifecycle = new Map<string, string>();
  const objectLocks: { key: string; mode: string; until: string }[] = [];
  const need = o.headsToComplete ?? 2;

  const readBody = async (req: IncomingMessage) => {
    const parts: Buffer[] = [];
    for await (const c of req) parts.push(c as Buffer);
    return Buffer.concat(parts);
  };
  const forward = (req: IncomingMessage, body: Buffer | null, onHead: (res: IncomingMessage) => { status: number; headers: Record<string, string> } | null, res: ServerResponse) => {
    const u = new URL(req.url!, upstream);
    const p = request({ hostname: up.hostname, port: up.port, method: req.method, path: u.pathname + u.search, headers: req.headers }, (r) => {
      const replaced = onHead(r);
      if (replaced) {
        r.resume();
        res.writeHead(replaced.status, replaced.headers).end(replaced.status === 403 ? invalidState : undefined);
        return;
      }
      res.writeHead(r.statusCode!, r.headers);
      r.pipe(res);
    });
    p.on('error', (err) => res.writeHead(502).end(String(err)));
    if (body) p.end(body);
    else req.pipe(p);
  };
  const invalidState = '<?xml version="1.0" encoding="UTF-8"?><Error><Code>InvalidObjectState</Code><Message>The operation is not valid for the object\'s storage class</Message></Error>';

  const server: Server = createServer(async (req, res) => {
    const u = new URL(req.url!, upstream);
    const key = decodeURIComponent(u.pathname);
    if (req.headers['x-amz-object-lock-mode']) objectLocks.push({ key, mode: String(req.headers['x-amz-object-lock-mode']), until: String(req.headers['x-amz-object-lock-retain-until-date']) });
    if (u.searchParams.has('lifecycle')) {
      const bucket = key.replace(/^\/|\/$/g, '');
      if (req.method === 'PUT') {
        lifecycle.set(bucket, (await readBody(req)).toString('utf8'));
        res.writeHead(200).end();
      } else if (lifecycle.has(bucket)) res.writeHead(200, { 'Content-Type': 'application/xml' }).end(lifecycle.get(bucket));
      else res.writeHead(404, { 'Content-Type': 'application/xml' }).end('<Error><Code>NoSuchLifecycleConfiguration</Code></Error>');
      return;
    }
    if (req.method === 'POST' && u.searchParams.has('restore')) {
      const body = (await readBody(req)).toString('utf8');
      const s = state.get(key);
      if (s && !s.done) return void res.writeHead(409, { 'Content-Type': 'application/xml' }).end('<Error><Code>RestoreAlreadyInProgress</Code></Error>');
      if (s?.done) return void res.writeHead(200).end();
      restores.push({ key, body });
      state.set(key, { heads: 0, done: false });
      return void res.writeHead(202).end();
    }
    const glacierClass = (r: IncomingMessage) => GLACIER.has(String(r.headers['x-amz-storage-class'] ?? ''));
    if (req.method === 'HEAD') {
      return forward(req, null, (r) => {
        const s = state.get(key);
        if (!glacierClass(r) || !s) return null;
        if (!s.done && ++s.heads >= need) s.done = true;
        const headers = Object.fromEntries(Object.entries(r.headers).map(([k, v]) => [k, String(v)]));
        headers['x-amz-restore'] = s.done ? `ongoing-request="false", expiry-date="${new Date(Date.now() + 86_400_000).toUTCString()}"` : 'ongoing-request="true"';
        return { status: r.statusCode!, headers };
      }, res);
    }
    if (req.method === 'GET' && !u.search) {
      return forward(req, null, (r) => (glacierClass(r) && !state.get(key)?.done ? { status: 403, headers: { 'Content-Type': 'application/xml' } } : null), res);
    }
    forward(req, null, () => null, res);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return {
    endpoint: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    restores,
    lifecycle,
    objectLocks,
    stop: () => new Promise<void>((r) => server.close(() => r())),
  };
}
