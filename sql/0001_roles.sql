-- Roles. Cluster-wide, so created only when missing (several Strata databases may share a cluster).
--   strata_maintainer  owns the metrics hypertable; runs move_chunk, compression, drop_chunks
--   strata_ingest      the gateway: COPY into metrics, series catalog, ingest ledger
--   strata_reader      group of every facility reader role (one login role per facility)
DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'strata_maintainer') THEN
    CREATE ROLE strata_maintainer NOLOGIN;
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'strata_ingest') THEN
    CREATE ROLE strata_ingest NOLOGIN;
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'strata_reader') THEN
    CREATE ROLE strata_reader NOLOGIN;
  END IF;
END
$$;

GRANT USAGE ON SCHEMA strata TO strata_maintainer, strata_ingest, strata_reader;
