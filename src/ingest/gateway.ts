// `strata serve`: wires the receiver, facility directory, series catalog, batchers, writer, spool
// and replayer over one database port, and shuts them down in order (SIGTERM: stop accepting,
// flush, spool what cannot be committed, exit 0).
import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import { join } from 'node:path';
import { Registry } from 'prom-client';
import type { Db } from '../db/port.ts';
import { StrataError, errorText } from '../errors.ts';
import type { Logger } from '../log.ts';
import { FacilityDirectory } from './auth.ts';
import type { Batch } from './batcher.ts';
import { classify, probeWritable } from './classify.ts';
import { IngestModeGate, logDecision, type IngestMode } from './ingest-mode.ts';
import { Ingestor } from './ingestor.ts';
import { createIngestMetrics, type IngestMetrics } from './metrics.ts';
import { Replayer } from './replayer.ts';
import { DEFAULT_MAX_SERIES_KEY_BYTES, SeriesCatalog } from './series.ts';
import { createReceiver, type SlowClientLimits } from './server.ts';
import { Spool } from './spool.ts';
import { loadTls, type TlsMaterial, type TlsSettings } from './tls.ts';
import type { TimeWindow } from './time-window.ts';
import { Writer } from './writer.ts';

/** Slow and idle clients: SlowClientLimits (server.ts). */
export interface GatewayOptions extends SlowClientLimits {
  region: string;
  host: string;
  port: number;
  spoolDir: string;
  spoolMaxBytes: number;
  maxQueueBytes: number;
  maxBodyBytes: number;
  batchRows: number;
  batchAgeMs: number;
  seriesLimit: number;
  /** STRATA_METRICS_TOKEN: the bearer token /metrics and /ready's details ask for (server.ts). */
  metricsToken?: string | undefined;
  /** HTTPS with these PEM files (tls.ts); read at start, again by Gateway.reloadTls(). */
  tls?: TlsSettings | undefined;
  /** The facility directory's periodic reload, the fallback when change notifications are lost (default 30 s). */
  facilityRefreshMs?: number;
  /** Bytes of a series key (series.ts seriesKeyBytes); default 2048, under the series index's row limit. */
  maxSeriesKeyBytes?: number;
  /** Lines longer than this many bytes are rejected; default 1 MiB. */
  maxLineBytes?: number;
  /** How far in the past and future a timestamp may be (time-window.ts); default: any. */
  timeWindow?: TimeWindow;
  ledgerRetention: string;
  /** Attempts per batch before it is spooled; default 3. */
  maxAttempts?: number;
  attemptTimeoutMs?: number;
  /** Write transactions in flight at once; default 4 (STRATA_WRITERS; the pool needs a few more connections). */
  writers?: number;
  /** Row store or columnstore COPY (ingest-mode.ts); default: the row store. */
  ingestMode?: IngestMode;
  replayIntervalMs?: number;
  /** How often old ledger rows are pruned; default 10 minutes. */
  ledgerPruneEveryMs?: number;
  defaultMetrics?: boolean;
  /**
   * What GET /metrics answers instead of this gateway's own registry (Prometheus text): each process
   * of `strata serve --processes N` answers the aggregate over all of them (src/serve-processes.ts).
   * `Gateway.metrics.registry` stays this gateway's own.
   */
  metricsText?: () => Promise<string>;
  /**
   * BENCHMARK ONLY (`npm run bench -- --gateway-only`; `strata serve` sets it from STRATA_BENCH_DISCARD):
   * batches are acknowledged as committed and their encoded rows thrown away instead of COPYed, so
   * a run measures parse + encode without the database write. Never in production: acked rows are lost.
   */
  discardRows?: boolean;
}

/** A registry whose exposition is `text()`: how the receiver's /metrics serves GatewayOptions.metricsText. */
class TextRegistry extends Registry {
  constructor(private readonly text: () => Promise<string>) {
    super();
  }
  override metrics(): Promise<string> {
    return this.text();
  }
}

/** The writer of a `discardRows` gateway: settles every part as committed and writes nothing. */
class DiscardingWriter extends Writer {
  override async write(batch: Batch): Promise<void> {
    for (const p of batch.parts) p.done({ ok: true, via: 'db' });
  }
}

export interface Gateway {
  readonly url: string;
  readonly metrics: IngestMetrics;
  readonly spool: Spool;
  readonly writer: Writer;
  /** The writer's row store or columnstore decision (ingest-mode.ts). */
  readonly mode: IngestModeGate;
  /** Token → facility, reloaded when the database announces a change (auth.ts). */
  readonly facilities: FacilityDirectory;
  readonly replayer: Replayer;
  readonly ingestor: Ingestor;
  /** The certificate served (undefined without TLS). */
  readonly tls: TlsMaterial | undefined;
  /**
   * Reads the TLS files again and serves the new certificate to new connections; open ones keep
   * theirs. Throws (and keeps serving the old certificate) when the new files are unusable.
   */
  reloadTls(): TlsMaterial;
  /** Stop accepting, flush every batcher, spool what the database cannot take, close. */
  stop(): Promise<void>;
}

function describeTls(m: TlsMaterial, s: TlsSettings): Record<string, unknown> {
  return { subject: m.subject, notAfter: m.notAfter.toISOString(), fingerprint256: m.fingerprint256, minVersion: s.minVersion, clientCertificates: m.clientCertificates, allowPlain: s.allowPlain };
}

function listen(server: Server, host: string, port: number): Promise<AddressInfo> {
  return new Promise((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) =>
      reject(new StrataError('listen', `cannot listen on ${host}:${port}: ${err.code === 'EADDRINUSE' ? 'the port is in use' : err.message}`, { cause: err })),
    );
    server.listen(port, host, () => resolve(server.address() as AddressInfo));
  });
}

export async function startGateway(db: Db, log: Logger, o: GatewayOptions): Promise<Gateway> {
  const metrics = createIngestMetrics({ defaults: o.defaultMetrics ?? true });
  // Unusable TLS files stop the start before anything is opened.
  let tls = o.tls ? loadTls(o.tls) : undefined;
  const spool = await Spool.open({ dir: o.spoolDir, maxBytes: o.spoolMaxBytes, logger: log.child({ component: 'spool' }) });
  const directory = new FacilityDirectory(db, o.region, log, { listen: (channel, on) => db.listen(channel, on), ...(o.facilityRefreshMs ? { refreshMs: o.facilityRefreshMs } : {}) });
  try {
    await directory.start();
  } catch (err) {
    if (classify(err) !== 'retry') {
      directory.stop();
      await spool.close();
      throw new StrataError('gateway_start', `cannot load facilities from ${db.target}: ${errorText(err)}`, { cause: err });
    }
    // Restarting during an outage: listen anyway, so the spool replays and known tokens work once
    // the database answers; until then writes get 503 and /ready says why.
    log.warn('database unreachable at start; facilities will load when it answers', { error: err });
  }
  const series = new SeriesCatalog(db, { series: o.seriesLimit, keyBytes: o.maxSeriesKeyBytes ?? DEFAULT_MAX_SERIES_KEY_BYTES }, log);
  const mode = new IngestModeGate(db, o.ingestMode ?? 'rowstore', logDecision(log));
  // Said at start when the database answers; otherwise at the first write once it does.
  if (directory.loaded && !o.discardRows) await mode.mode().catch((err: unknown) => log.warn('ingest mode not decided yet: the database did not answer; asked again at the first write', { error: err }));
  if (o.discardRows) log.warn('discardRows (STRATA_BENCH_DISCARD) is set: rows are acknowledged and DISCARDED, not written; benchmarks only');
  const writer = new (o.discardRows ? DiscardingWriter : Writer)(db, spool, metrics, log, { maxAttempts: o.maxAttempts ?? 3, attemptTimeoutMs: o.attemptTimeoutMs ?? 1_500, concurrency: o.writers ?? 4, mode }, (id) => directory.codeOf(id));
  // A facility alone may keep every writer busy; with others queued, writer slots go round in turn.
  const ingestor = new Ingestor(series, writer, spool, metrics, log, { ...o, flushesPerFacility: o.writers ?? 4 });
  const replayer = new Replayer(db, spool, writer, metrics, log, {
    intervalMs: o.replayIntervalMs ?? 1_000,
    ledgerRetention: o.ledgerRetention,
    pruneEveryMs: o.ledgerPruneEveryMs ?? 10 * 60_000,
    rejectDir: join(o.spoolDir, 'rejected'),
  });
  const server = createReceiver(directory, ingestor, o.metricsText ? { ...metrics, registry: new TextRegistry(o.metricsText) } : metrics, log, {
      maxBodyBytes: o.maxBodyBytes,
      headersTimeoutMs: o.headersTimeoutMs,
      idleTimeoutMs: o.idleTimeoutMs,
      bodyIdleTimeoutMs: o.bodyIdleTimeoutMs,
      bodyMinBytesPerSecond: o.bodyMinBytesPerSecond,
      bodyRateWindowMs: o.bodyRateWindowMs,
      maxConnections: o.maxConnections,
      metricsToken: o.metricsToken,
      tls: tls && { material: tls, allowPlain: o.tls!.allowPlain },
      async notReady(detail) {
        if (spool.wouldOverflow(1)) return `the spool is full (${spool.bytes} of ${o.spoolMaxBytes} bytes)`;
        if (!directory.loaded) {
          // Started during an outage: readiness checks retry the load, so the gateway is ready as soon as the database is.
          try {
            await directory.refresh();
          } catch (err) {
            return `facilities not loaded yet: the database has not answered since start${detail ? ` (${errorText(err)})` : ''}`;
          }
        }
        // Ready means the database accepts writes: a standby or a primary turned read-only answers
        // queries but is not ready (the writer spools while it lasts).
        const state = await probeWritable(db);
        if (state.writable) return null;
        // The database's own error names its host: only for a caller with the metrics token.
        return state.error === undefined || !detail ? state.reason : `${state.reason}: ${(state.error as Error).message}`;
      },
  });
  const address = await listen(server, o.host, o.port).catch(async (err) => {
    directory.stop();
    await spool.close();
    throw err;
  });
  replayer.start();
  if (!spool.empty) log.info('spool holds batches from an earlier run; replaying', { bytes: spool.bytes });
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  const scheme = tls ? 'https' : 'http';
  log.info('gateway listening', {
    url: `${scheme}://${host}:${address.port}`,
    region: o.region,
    facilities: directory.size,
    ...(tls ? { tls: describeTls(tls, o.tls!) } : {}),
  });

  let stopping: Promise<void> | null = null;
  return {
    url: `${scheme}://${host === '0.0.0.0' ? '127.0.0.1' : host}:${address.port}`,
    metrics,
    spool,
    writer,
    mode,
    facilities: directory,
    replayer,
    ingestor,
    get tls() {
      return tls;
    },
    reloadTls() {
      if (!o.tls) throw new StrataError('tls_reload', 'TLS is not configured (STRATA_TLS_CERT, STRATA_TLS_KEY): nothing to reload');
      const next = loadTls(o.tls);
      if ('setSecureContext' in server) server.setSecureContext(next.context);
      tls = next;
      log.info('TLS certificate reloaded', describeTls(next, o.tls));
      return next;
    },
    stop() {
      stopping ??= (async () => {
        log.info('gateway stopping: flushing batches');
        const closed = new Promise<void>((resolve) => server.close(() => resolve()));
        server.closeIdleConnections();
        await ingestor.drain();
        // Requests in flight now have their answers; give their sockets a moment, then close them.
        await Promise.race([closed, new Promise((r) => setTimeout(r, 2_000))]);
        server.closeAllConnections();
        directory.stop();
        await replayer.stop();
        await spool.close();
        log.info('gateway stopped', { spooledBytes: spool.bytes });
      })();
      return stopping;
    },
  };
}
