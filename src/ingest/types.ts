// Shared shapes of the ingest gateway.
//
// Glossary
//   facility   a site whose collectors hold one ingest token; every row a token sends is the facility's.
//   point      one line (or JSON metric) parsed in full: measurement, sorted tags, numeric fields, time.
//              Lines whose series are cached never become points: the fast path encodes their bytes.
//   series     (facility, measurement, field key, tag set) → series_id in strata.series.
//   series key the series as line-protocol bytes, tags sorted (series-key.ts): what the cache is keyed by.
//   part       the rows of one request, already encoded as binary COPY tuples (no header/trailer),
//              waiting in a facility's batcher with the request's promise.
//   batch      the parts one flush writes: one id, one transaction = one ledger row + one COPY.
//   durable    committed in the database, or fsynced into the disk spool; only then is a request acked.
//   spool      append-only segment files on local disk holding batches the database could not take.
//   ledger     strata.ingest_ledger: a batch id committed in the same transaction as its rows, so a
//              retry after an unknown outcome is recognised and not written twice.

/** A facility as the gateway knows it. */
export interface Facility {
  id: number;
  code: string;
  region: string;
}

/** A batch as the spool stores it: binary COPY tuples (no header/trailer) of one facility. */
export interface SpoolRecord {
  batchId: string;
  facilityId: number;
  rowCount: number;
  /** Binary COPY row tuples for strata.metrics, without the file header and trailer. */
  rows: Buffer;
  /** When it was spooled, ms since the epoch. */
  spooledAt: number;
}
