// The gateway's Prometheus metrics: fixed names, instrumented per request and per batch, errors
// labelled by stage (receive, parse, auth, series, write, spool, replay). One registry per gateway.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export type Stage = 'receive' | 'parse' | 'auth' | 'series' | 'write' | 'spool' | 'replay' | 'ledger';

export function createIngestMetrics(opts: { defaults?: boolean } = {}) {
  const registry = new Registry();
  if (opts.defaults !== false) collectDefaultMetrics({ register: registry, prefix: 'strata_' });
  const c = (name: string, help: string, labelNames: string[] = []) => new Counter({ name, help, labelNames, registers: [registry] });
  const m = {
    registry,
    rowsReceived: c('strata_ingest_rows_received_total', 'Rows parsed from accepted requests', ['facility']),
    rowsCommitted: c('strata_ingest_rows_committed_total', 'Rows committed to the database (directly or by spool replay)', ['facility']),
    rowsRejected: c('strata_ingest_rows_rejected_total', 'Lines, fields or rows refused, by reason', ['reason']),
    rowsSpooled: c('strata_ingest_rows_spooled_total', 'Rows made durable in the disk spool instead of the database'),
    bytesReceived: c('strata_ingest_bytes_received_total', 'Request body bytes received (as sent, before gunzip)'),
    bytesCommitted: c('strata_ingest_bytes_committed_total', 'Binary COPY bytes committed'),
    requests: c('strata_ingest_requests_total', 'HTTP requests by endpoint and status', ['endpoint', 'status']),
    batches: c('strata_ingest_batches_total', 'Batches written, by outcome (committed, duplicate, spooled, rejected, failed)', ['outcome']),
    retries: c('strata_ingest_retries_total', 'Retried database operations, by stage', ['stage']),
    duplicatesAvoided: c('strata_ingest_duplicates_avoided_total', 'Batches found already committed in the ledger on retry or replay'),
    errors: c('strata_ingest_errors_total', 'Errors by stage', ['stage']),
    spoolQuarantined: c('strata_ingest_spool_quarantined_segments_total', 'Corrupt spool segments moved to quarantine'),
    spoolDamagedRecords: c('strata_ingest_spool_damaged_records_total', 'Spool records found damaged on replay and kept in quarantine (at least; one per unreadable span)'),
    spoolDamagedBytes: c('strata_ingest_spool_damaged_bytes_total', 'Bytes of damaged spool spans moved to quarantine'),
    spoolDamagedRows: c('strata_ingest_spool_damaged_rows_total', 'Rows of damaged spool records, as their headers say when readable: acknowledged, not replayed'),
    spoolTornTails: c('strata_ingest_spool_torn_tails_total', 'Unacknowledged appends cut short by a crash, dropped from the active segment on replay'),
    batchRows: new Histogram({
      name: 'strata_ingest_batch_rows',
      help: 'Rows per written batch',
      buckets: [10, 100, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000],
      registers: [registry],
    }),
    copySeconds: new Histogram({
      name: 'strata_ingest_copy_seconds',
      help: 'Time of one batch transaction (ledger row + COPY + COMMIT)',
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
      registers: [registry],
    }),
    ackSeconds: new Histogram({
      name: 'strata_ingest_ack_seconds',
      help: 'Time from a request being parsed to its rows being durable',
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers: [registry],
    }),
    queuedBytes: new Gauge({ name: 'strata_ingest_queued_bytes', help: 'Encoded bytes accepted but not yet durable', registers: [registry] }),
    spoolBytes: new Gauge({ name: 'strata_ingest_spool_bytes', help: 'Bytes held in the disk spool', registers: [registry] }),
    spoolOldestAge: new Gauge({ name: 'strata_ingest_spool_oldest_age_seconds', help: 'Age of the oldest spooled batch (0 when empty)', registers: [registry] }),
    seriesCreated: c('strata_ingest_series_created_total', 'Series added to the catalog'),
    connectionsCut: c(
      'strata_ingest_connections_cut_total',
      'Connections the gateway closed for being slow or idle, or refused at the connection cap, by reason (headers, idle, idle_first, body_idle, body_rate, request, max_connections, tls: a failed or slow TLS handshake, plain_http: plain HTTP on a TLS port)',
      ['reason'],
    ),
  };
  return m;
}

export type IngestMetrics = ReturnType<typeof createIngestMetrics>;
