// The HTTP receiver: InfluxDB 1.x/2.x write endpoints, the JSON endpoint, health, readiness and
// Prometheus metrics. Authenticates before reading a body, refuses early under backpressure, and
// answers 204 only once every accepted row is durable (committed or fsynced in the spool).
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Logger } from '../log.ts';
import type { FacilityDirectory } from './auth.ts';
import { requestToken } from './auth.ts';
import { readBody } from './body.ts';
import type { AcceptResult, Ingestor, Prepared } from './ingestor.ts';
import { parseJsonMetrics } from './json.ts';
import type { Precision } from './lineprotocol.ts';
import type { IngestMetrics } from './metrics.ts';

export interface ReceiverOptions {
  maxBodyBytes: number;
  /** Readiness: database reachable and spool below its limit; a reason when not. */
  notReady(): Promise<string | null>;
}

type Endpoint = 'v1' | 'v2' | 'json';
const PRECISIONS: Record<Endpoint, Record<string, Precision>> = {
  v1: { n: 'ns', ns: 'ns', u: 'us', us: 'us', µ: 'us', ms: 'ms', s: 's', m: 'm', h: 'h' },
  v2: { ns: 'ns', us: 'us', ms: 'ms', s: 's' },
  json: {},
};
const CODES: Record<number, string> = { 400: 'invalid', 401: 'unauthorized', 403: 'forbidden', 404: 'not found', 405: 'method not allowed', 413: 'request too large', 415: 'unsupported media type', 429: 'too many requests', 500: 'internal error', 503: 'unavailable' };
/** Rejected lines listed in a response body; the count is always given. */
const MAX_LISTED = 100;

function send(res: ServerResponse, status: number, body?: unknown, headers: Record<string, string> = {}): void {
  if (res.headersSent) return;
  const text = body === undefined ? '' : JSON.stringify(body);
  res.writeHead(status, { ...(text ? { 'Content-Type': 'application/json; charset=utf-8' } : {}), 'X-Influxdb-Version': '1.8-strata', ...headers });
  res.end(text);
}

function fail(res: ServerResponse, status: number, message: string, extra: Record<string, unknown> = {}, headers: Record<string, string> = {}): void {
  send(res, status, { code: CODES[status] ?? 'error', message, error: message, ...extra }, headers);
}

export function createReceiver(directory: FacilityDirectory, ingestor: Ingestor, metrics: IngestMetrics, log: Logger, opts: ReceiverOptions): Server {
  let receivingBytes = 0;

  async function write(req: IncomingMessage, res: ServerResponse, url: URL, endpoint: Endpoint): Promise<void> {
    let precision: Precision = 'ns';
    if (endpoint !== 'json') {
      const p = url.searchParams.get('precision');
      if (p !== null && p !== '') {
        const known = PRECISIONS[endpoint][p];
        if (!known) return fail(res, 400, `precision=${p} is not supported; use one of ${Object.keys(PRECISIONS[endpoint]).filter((x) => x !== 'µ').join(', ')}`);
        precision = known;
      }
    }
    const cred = requestToken(req.headers, url.searchParams, endpoint === 'v1');
    if ('error' in cred) return fail(res, 401, cred.error, {}, { 'WWW-Authenticate': 'Token' });
    const auth = await directory.authenticate(cred.token);
    if (!auth.ok) {
      metrics.errors.inc({ stage: 'auth' });
      return fail(res, auth.status, auth.message, {}, auth.status === 503 ? { 'Retry-After': '5' } : {});
    }
    const declared = Number(req.headers['content-length']) || 1 << 20;
    const pressure = ingestor.pressure(receivingBytes + Math.min(declared, opts.maxBodyBytes));
    if (pressure) return fail(res, pressure.status, pressure.message, {}, { 'Retry-After': String(pressure.retryAfter) });

    // Bodies count against the queue budget as they arrive (after gunzip) until they are parsed.
    let held = 0;
    const take = (n: number) => {
      if (ingestor.pressure(receivingBytes + n)) return false;
      receivingBytes += n;
      held += n;
      return true;
    };
    let body: Awaited<ReturnType<typeof readBody>>;
    try {
      body = await readBody(req, opts.maxBodyBytes, take);
    } finally {
      receivingBytes -= held;
    }
    if (!body.ok) {
      metrics.errors.inc({ stage: 'receive' });
      const headers: Record<string, string> = body.status === 413 ? { Connection: 'close' } : body.status === 429 ? { 'Retry-After': '1', Connection: 'close' } : {};
      return fail(res, body.status, body.message, {}, headers);
    }
    metrics.bytesReceived.inc(body.rawBytes);
    const receiveUs = Math.round((performance.timeOrigin + performance.now()) * 1000);
    // What prepare returns holds neither the body nor parsed points, so both are garbage while the rows wait.
    let prepared: Prepared | AcceptResult;
    if (endpoint === 'json') {
      const parsed = parseJsonMetrics(body.body);
      if ('error' in parsed) {
        metrics.errors.inc({ stage: 'parse' });
        return fail(res, 400, parsed.error);
      }
      prepared = await ingestor.preparePoints(auth.facility, parsed, receiveUs);
    } else {
      prepared = await ingestor.prepareLines(auth.facility, body.body, precision, receiveUs);
    }
    const r = 'encoded' in prepared ? await ingestor.enqueue(auth.facility, prepared) : prepared;
    if (r.status === 204) return send(res, 204);
    const what = endpoint === 'json' ? 'index' : 'line';
    const listed = r.rejected.slice(0, MAX_LISTED).map((e) => ({ [what]: e.line, reason: e.reason }));
    if (r.status === 400 && !r.message) {
      const first = r.rejected[0];
      const message = `partial write: ${r.rejected.length} ${what === 'line' ? 'line(s)' : 'metric(s)'} with errors, ${r.written} row(s) written; first: ${what} ${first?.line}: ${first?.reason}`;
      return fail(res, 400, message, { written: r.written, rejectedCount: r.rejected.length, rejected: listed });
    }
    return fail(res, r.status, r.message ?? 'request failed', { written: r.written, rejectedCount: r.rejected.length, rejected: listed }, r.retryAfter ? { 'Retry-After': String(r.retryAfter) } : {});
  }

  async function route(req: IncomingMessage, res: ServerResponse): Promise<string> {
    const url = new URL(req.url ?? '/', 'http://gateway');
    const path = url.pathname.replace(/\/+$/, '') || '/';
    const post = (endpoint: Endpoint) => (req.method === 'POST' ? write(req, res, url, endpoint) : fail(res, 405, `${path} accepts POST`, {}, { Allow: 'POST' }));
    switch (path) {
      case '/write':
        await post('v1');
        return 'write_v1';
      case '/api/v2/write':
        await post('v2');
        return 'write_v2';
      case '/v1/metrics':
        await post('json');
        return 'json';
      case '/health':
        send(res, 200, { status: 'ok' });
        return 'health';
      case '/ready': {
        const reason = await opts.notReady();
        if (reason) fail(res, 503, reason, { status: 'not ready' }, { 'Retry-After': '5' });
        else send(res, 200, { status: 'ready' });
        return 'ready';
      }
      case '/metrics':
        res.writeHead(200, { 'Content-Type': metrics.registry.contentType });
        res.end(await metrics.registry.metrics());
        return 'metrics';
      case '/ping':
        send(res, 204);
        return 'ping';
      case '/query': {
        // Telegraf's outputs.influxdb creates its database on start; there is nothing to create here.
        const q = url.searchParams.get('q') ?? '';
        if (/^\s*create\s+database\b/i.test(q)) send(res, 200, { results: [{ statement_id: 0 }] });
        else fail(res, 400, 'queries are not supported by the Strata gateway; read from TimescaleDB');
        return 'query';
      }
      default:
        fail(res, 404, `no endpoint ${path}; write to /write, /api/v2/write or /v1/metrics`);
        return 'unknown';
    }
  }

  const server = createServer({ requestTimeout: 120_000, headersTimeout: 30_000 }, (req, res) => {
    route(req, res)
      .then((endpoint) => metrics.requests.inc({ endpoint, status: String(res.statusCode) }))
      .catch((err: unknown) => {
        metrics.errors.inc({ stage: 'receive' });
        log.error('request failed', { path: (req.url ?? '').split('?')[0], error: err }); // the query may hold a token
        fail(res, 500, 'internal error');
      })
      .finally(() => {
        if (!req.complete) req.resume();
      });
  });
  server.maxConnections = 4_096;
  return server;
}
