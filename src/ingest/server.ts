// The HTTP receiver: InfluxDB 1.x/2.x write endpoints, the JSON endpoint, health, readiness and
// Prometheus metrics. Authenticates before reading a body, refuses early under backpressure, and
// answers 204 only once every accepted row is durable (committed or fsynced in the spool).
import { timingSafeEqual } from 'node:crypto';
import { STATUS_CODES, createServer, type IncomingMessage, type Server, type ServerOptions, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import type { Socket } from 'node:net';
import type { Logger } from '../log.ts';
import type { FacilityDirectory } from './auth.ts';
import { requestToken } from './auth.ts';
import { readBody, watchPace, type BodyPace } from './body.ts';
import type { AcceptResult, Ingestor, Prepared } from './ingestor.ts';
import { parseJsonMetrics } from './json.ts';
import type { Precision } from './lineprotocol.ts';
import type { IngestMetrics } from './metrics.ts';
import { looksLikeTls, type TlsMaterial } from './tls.ts';

/** What slow and idle clients may hold (defaults in SLOW_CLIENT_DEFAULTS; see cutSlowClients()). */
export interface SlowClientLimits {
  /** Complete request headers within this; default 5 s. */
  headersTimeoutMs?: number;
  /** Keep-alive idle between requests; default 5 s. */
  idleTimeoutMs?: number;
  /** A body with no byte for this long is cut (408); default 5 s. */
  bodyIdleTimeoutMs?: number;
  /** A body slower than this over each `bodyRateWindowMs` is cut (408); default 64 KiB/s, 0 off. */
  bodyMinBytesPerSecond?: number;
  /** The window (and grace) of the body rate; default 5 s. */
  bodyRateWindowMs?: number;
  /** Connections at once; beyond it new ones are closed as they arrive; default 4096. */
  maxConnections?: number;
}

export interface ReceiverOptions extends SlowClientLimits {
  maxBodyBytes: number;
  /** Readiness: database reachable and spool below its limit; a reason when not (`detail`: with the database's own error, which names its host). */
  notReady(detail: boolean): Promise<string | null>;
  /**
   * STRATA_METRICS_TOKEN: /metrics (it names every facility) and /ready's details answer only a
   * caller sending `Authorization: Bearer <token>`; without a token configured /metrics is refused.
   */
  metricsToken?: string | undefined;
  /** HTTPS (tls.ts); reload with `server.setSecureContext(material.context)`. */
  tls?: { material: TlsMaterial; allowPlain: boolean } | undefined;
}

/** Whether the request carries the operations token (compared in constant time). */
function opsAuthorized(req: IncomingMessage, token: string | undefined): boolean {
  if (!token) return false;
  const m = /^Bearer\s+(.+)$/i.exec(req.headers.authorization?.trim() ?? '');
  if (!m) return false;
  const a = Buffer.from(m[1]!.trim());
  const b = Buffer.from(token);
  return a.length === b.length && timingSafeEqual(a, b);
}

type Endpoint = 'v1' | 'v2' | 'json';
const PRECISIONS: Record<Endpoint, Record<string, Precision>> = {
  v1: { n: 'ns', ns: 'ns', u: 'us', us: 'us', µ: 'us', ms: 'ms', s: 's', m: 'm', h: 'h' },
  v2: { ns: 'ns', us: 'us', ms: 'ms', s: 's' },
  json: {},
};
const CODES: Record<number, string> = { 400: 'invalid', 401: 'unauthorized', 403: 'forbidden', 404: 'not found', 405: 'method not allowed', 408: 'request timeout', 413: 'request too large', 415: 'unsupported media type', 429: 'too many requests', 500: 'internal error', 503: 'unavailable' };
/** Rejected lines listed in a response body; the count is always given. */
const MAX_LISTED = 100;

/**
 * What a slow or silent connection may hold, in milliseconds: complete request headers within
 * `headersTimeoutMs` (a new connection that sends nothing is closed then too), keep-alive idle
 * between requests (Node closes 1 s after the advertised `Keep-Alive: timeout=`), a body with no byte
 * for `bodyIdleTimeoutMs` or slower than `bodyMinBytesPerSecond` over each `bodyRateWindowMs` (the
 * first window is the grace), the whole request within `requestTimeoutMs`. At `maxConnections`, new
 * connections are closed as they arrive.
 */
export const SLOW_CLIENT_DEFAULTS = {
  headersTimeoutMs: 5_000,
  idleTimeoutMs: 5_000,
  bodyIdleTimeoutMs: 5_000,
  bodyMinBytesPerSecond: 64 << 10,
  bodyRateWindowMs: 5_000,
  requestTimeoutMs: 120_000,
  maxConnections: 4_096,
};
export type CutReason = 'headers' | 'idle' | 'idle_first' | 'body_idle' | 'body_rate' | 'request' | 'max_connections' | 'tls' | 'plain_http';

function send(res: ServerResponse, status: number, body?: unknown, headers: Record<string, string> = {}): void {
  if (res.headersSent) return;
  const text = body === undefined ? '' : JSON.stringify(body);
  res.writeHead(status, { ...(text ? { 'Content-Type': 'application/json; charset=utf-8' } : {}), 'X-Influxdb-Version': '1.8-strata', ...headers });
  res.end(text);
}

function fail(res: ServerResponse, status: number, message: string, extra: Record<string, unknown> = {}, headers: Record<string, string> = {}): void {
  send(res, status, { code: CODES[status] ?? 'error', message, error: message, ...extra }, headers);
}

/** An answer written straight to the socket, from the clientError handler (no response object to write it with, or one Node is about to destroy). */
function rawAnswer(status: number, message: string): string {
  const text = JSON.stringify({ code: CODES[status] ?? 'error', message, error: message });
  return (
    `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ''}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(text)}\r\n` +
    `X-Influxdb-Version: 1.8-strata\r\nConnection: close\r\n\r\n${text}`
  );
}

export function createReceiver(directory: FacilityDirectory, ingestor: Ingestor, metrics: IngestMetrics, log: Logger, opts: ReceiverOptions): Server | HttpsServer {
  const limits = {
    headersTimeoutMs: opts.headersTimeoutMs ?? SLOW_CLIENT_DEFAULTS.headersTimeoutMs,
    idleTimeoutMs: opts.idleTimeoutMs ?? SLOW_CLIENT_DEFAULTS.idleTimeoutMs,
    maxConnections: opts.maxConnections ?? SLOW_CLIENT_DEFAULTS.maxConnections,
  };
  const requestTimeoutMs = Math.max(SLOW_CLIENT_DEFAULTS.requestTimeoutMs, limits.headersTimeoutMs);
  const pace: BodyPace = {
    idleMs: opts.bodyIdleTimeoutMs ?? SLOW_CLIENT_DEFAULTS.bodyIdleTimeoutMs,
    minBytesPerSecond: opts.bodyMinBytesPerSecond ?? SLOW_CLIENT_DEFAULTS.bodyMinBytesPerSecond,
    windowMs: opts.bodyRateWindowMs ?? SLOW_CLIENT_DEFAULTS.bodyRateWindowMs,
  };
  /** Counted, and one debug line at most (none for a keep-alive expiry, which is normal): under attack there may be thousands. */
  const cut = (reason: CutReason, socket: { remoteAddress?: string | undefined } | null, detail?: string) => {
    metrics.connectionsCut.inc({ reason });
    if (reason !== 'idle') log.debug('connection cut', { reason, remote: socket?.remoteAddress, ...(detail ? { detail } : {}) });
  };

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
    const facilityId = auth.facility.id;
    const pressure = ingestor.pressure(Math.min(declared, opts.maxBodyBytes), facilityId);
    if (pressure) return fail(res, pressure.status, pressure.message, {}, { 'Retry-After': String(pressure.retryAfter) });

    // Bodies count against the queue budget (and their facility's share) as they arrive, after
    // gunzip, until they are parsed.
    let held = 0;
    const take = (n: number) => {
      if (!ingestor.reserve(facilityId, n)) return false;
      held += n;
      return true;
    };
    let body: Awaited<ReturnType<typeof readBody>>;
    try {
      body = await readBody(req, opts.maxBodyBytes, take, pace);
    } finally {
      ingestor.release(facilityId, held);
    }
    if (!body.ok) {
      metrics.errors.inc({ stage: 'receive' });
      if (body.status === 408) {
        // Answer, then close: the rest of a slow body is not waited for (with Connection: close Node ends the socket once the answer is out).
        cut(body.cut, req.socket, body.message);
        return fail(res, 408, body.message, {}, { Connection: 'close' });
      }
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
        const detail = opsAuthorized(req, opts.metricsToken);
        const reason = await opts.notReady(detail);
        if (reason) fail(res, 503, reason, { status: 'not ready' }, { 'Retry-After': '5' });
        else send(res, 200, { status: 'ready' });
        return 'ready';
      }
      case '/metrics':
        if (!opsAuthorized(req, opts.metricsToken)) {
          if (opts.metricsToken) fail(res, 401, 'the metrics name every facility: send "Authorization: Bearer <STRATA_METRICS_TOKEN>"', {}, { 'WWW-Authenticate': 'Bearer' });
          else fail(res, 403, 'the metrics name every facility, so they are served only with a token: set STRATA_METRICS_TOKEN and send "Authorization: Bearer <token>"');
          return 'metrics';
        }
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

  const httpOptions: ServerOptions = {
    requestTimeout: requestTimeoutMs,
    headersTimeout: limits.headersTimeoutMs,
    keepAliveTimeout: limits.idleTimeoutMs,
    // Node checks the headers and request deadlines this often (30 s by default).
    connectionsCheckingInterval: Math.max(20, Math.min(1_000, Math.floor(limits.headersTimeoutMs / 5))),
  };
  const handle = (req: IncomingMessage, res: ServerResponse) => {
    route(req, res)
      .then((endpoint) => metrics.requests.inc({ endpoint, status: String(res.statusCode) }))
      .catch((err: unknown) => {
        metrics.errors.inc({ stage: 'receive' });
        log.error('request failed', { path: (req.url ?? '').split('?')[0], error: err }); // the query may hold a token
        fail(res, 500, 'internal error');
      })
      .finally(() => {
        if (req.complete) return;
        // An answer given before the body was read (401, 404, 415, early 429 …): the rest is discarded
        // for keep-alive, as fast as the pace rules demand, or the connection is closed.
        watchPace(req, pace, (slow) => {
          cut(slow.reason, req.socket, slow.message);
          req.socket.destroy();
        });
        req.resume();
      });
  };
  if (!opts.tls) {
    const server = createServer(httpOptions, handle);
    cutSlowClients(server, limits, requestTimeoutMs, cut, log, 'connection');
    return server;
  }
  const { material, allowPlain } = opts.tls;
  const server = createHttpsServer(
    {
      ...httpOptions,
      ...material.context,
      requestCert: material.clientCertificates,
      rejectUnauthorized: material.clientCertificates,
      // A TLS handshake not done in time is cut as a slow header would be.
      handshakeTimeout: limits.headersTimeoutMs,
    },
    handle,
  );
  // HTTP is served on the decrypted socket ('secureConnection'), so keep-alive expiries are seen there.
  cutSlowClients(server, limits, requestTimeoutMs, cut, log, 'secureConnection');
  sniffPlainHttp(server, allowPlain, limits.headersTimeoutMs, cut);
  server.on('tlsClientError', (err: NodeJS.ErrnoException, socket: Socket) => cut('tls', socket, err.code ?? err.message));
  return server;
}

/**
 * A TLS port's first byte tells TLS (a handshake record) from plain HTTP: TLS goes on to the
 * handshake; plain HTTP is served as on an HTTP port when `allowPlain`, otherwise answered 400
 * saying to use https:// and closed. A connection that sends nothing is closed after `silentMs`.
 */
function sniffPlainHttp(server: Server, allowPlain: boolean, silentMs: number, cut: (reason: CutReason, socket: Socket, detail?: string) => void): void {
  const handshake = server.listeners('connection') as ((socket: Socket) => void)[];
  server.removeAllListeners('connection');
  server.on('connection', (socket: Socket) => {
    const silent = setTimeout(() => {
      cut('idle_first', socket);
      socket.destroy();
    }, silentMs);
    socket.once('close', () => clearTimeout(silent));
    socket.once('data', (first: Buffer) => {
      clearTimeout(silent);
      socket.pause();
      socket.unshift(first);
      if (looksLikeTls(first)) {
        for (const l of handshake) l.call(server, socket);
      } else if (allowPlain) {
        // The HTTP half of the HTTPS server takes plain sockets as it takes decrypted ones.
        server.emit('secureConnection', socket);
        socket.resume();
      } else {
        cut('plain_http', socket);
        socket.end(rawAnswer(400, 'this port speaks HTTPS only: send to https:// (STRATA_TLS_ALLOW_PLAIN=1 on the gateway also accepts plain HTTP)'));
        socket.destroySoon();
      }
    });
  });
}

/**
 * What Node's server does not do by itself: 408 with a JSON reason for headers or a request that did
 * not arrive in time (a new connection that sent nothing is just closed), the other client errors
 * answered as Node would, keep-alive expiries and refusals at the connection cap counted, and a
 * warning at most once a minute while the cap refuses connections.
 */
function cutSlowClients(
  server: Server,
  limits: { headersTimeoutMs: number; maxConnections: number },
  requestTimeoutMs: number,
  cut: (reason: CutReason, socket: { remoteAddress?: string | undefined } | null, detail?: string) => void,
  log: Logger,
  connectionEvent: 'connection' | 'secureConnection',
): void {
  server.maxConnections = limits.maxConnections;
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => {
    // The response being written on this socket, if any, and the request being parsed (or the last one).
    const inFlight = (socket as Socket & { _httpMessage?: ServerResponse | null })._httpMessage;
    const incoming = (socket as Socket & { parser?: { incoming?: IncomingMessage | null } | null }).parser?.incoming;
    const answerable = socket.writable && (!inFlight || !inFlight.headersSent);
    if (err.code === 'ERR_HTTP_REQUEST_TIMEOUT') {
      if (incoming && !incoming.complete) {
        // Headers complete, the body still arriving (read, or discarded after an early answer).
        const message = `request too slow: not received completely within ${requestTimeoutMs} ms (the limit)`;
        cut('request', socket, message);
        if (inFlight && answerable) socket.write(rawAnswer(408, message));
      } else if (socket.bytesRead === 0) cut('idle_first', socket);
      else {
        // A keep-alive socket counts against the headers deadline from the first byte of its next request.
        const message = `request headers too slow: not complete within ${limits.headersTimeoutMs} ms (the limit)`;
        cut('headers', socket, message);
        if (!inFlight && socket.writable) socket.write(rawAnswer(408, message));
      }
    } else if (answerable && err.code !== 'ECONNRESET') {
      // Node's own answers when no clientError listener exists.
      const status = err.code === 'HPE_HEADER_OVERFLOW' ? 431 : err.code === 'HPE_CHUNK_EXTENSIONS_OVERFLOW' ? 413 : 400;
      socket.write(`HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nConnection: close\r\n\r\n`);
    }
    socket.destroy(err);
  });
  // With server.timeout 0, a server socket times out only on keep-alive idle (Node then closes it).
  server.on(connectionEvent, (socket: Socket) => socket.once('timeout', () => cut('idle', socket)));
  let refused = 0;
  let warnedAt = -Infinity;
  server.on('drop', (d?: { remoteAddress?: string }) => {
    cut('max_connections', d ?? null);
    refused++;
    const now = performance.now();
    if (now - warnedAt < 60_000) return;
    log.warn('connection cap reached: new connections are closed as they arrive', { maxConnections: limits.maxConnections, refusedSinceLastWarning: refused });
    warnedAt = now;
    refused = 0;
  });
}
