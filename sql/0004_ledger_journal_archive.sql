-- Ingest ledger, job journal (tiering and archive steps) and archive catalog.

-- One row per committed ingest batch, inserted in the same transaction as the batch's COPY:
-- a retry after an unknown outcome finds it and does not write the rows twice.
CREATE TABLE strata.ingest_ledger (
  batch_id     uuid PRIMARY KEY,
  facility_id  integer NOT NULL,
  row_count    integer NOT NULL CHECK (row_count >= 0),
  committed_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ingest_ledger_committed_at_idx ON strata.ingest_ledger (committed_at);

-- Every step of a tiering or archive job: pending → running → done | failed (or skipped).
CREATE TABLE strata.job_journal (
  id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  job         text NOT NULL CHECK (job IN ('tiering', 'archive', 'restore', 'expire')),
  run_id      uuid NOT NULL,
  hypertable  text NOT NULL,
  chunk       text NOT NULL,
  step        text NOT NULL,
  state       text NOT NULL CHECK (state IN ('pending', 'running', 'done', 'failed', 'skipped')),
  attempt     integer NOT NULL DEFAULT 1,
  error       text,
  detail      jsonb NOT NULL DEFAULT '{}'::jsonb,
  created_at  timestamptz NOT NULL DEFAULT now(),
  started_at  timestamptz,
  finished_at timestamptz
);
CREATE INDEX job_journal_chunk_idx ON strata.job_journal (job, chunk, step, created_at DESC);
CREATE INDEX job_journal_run_idx ON strata.job_journal (run_id);

-- One row per archived chunk (one object per chunk).
CREATE TABLE strata.archive_catalog (
  id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  hypertable        text NOT NULL,
  region            text NOT NULL,
  range_start       timestamptz NOT NULL,
  range_end         timestamptz NOT NULL CHECK (range_end > range_start),
  bucket            text NOT NULL,
  object_key        text NOT NULL,
  version_id        text,
  etag              text,
  bytes             bigint,
  row_count         bigint,
  rows_per_facility jsonb NOT NULL DEFAULT '{}'::jsonb,
  facility_ids      integer[] NOT NULL DEFAULT '{}',
  sha256            text,
  storage_class     text NOT NULL,
  state             text NOT NULL CHECK (state IN ('uploading', 'uploaded', 'verified', 'dropped', 'expired')),
  archived_at       timestamptz,
  retain_until      timestamptz,
  expired_at        timestamptz,
  UNIQUE (hypertable, range_start, range_end),
  UNIQUE (bucket, object_key)
);

GRANT SELECT, INSERT ON strata.ingest_ledger TO strata_ingest;
GRANT SELECT, INSERT, UPDATE, DELETE ON strata.ingest_ledger TO strata_maintainer;
GRANT SELECT, INSERT, UPDATE ON strata.job_journal TO strata_maintainer;
GRANT SELECT, INSERT, UPDATE ON strata.archive_catalog TO strata_maintainer;
