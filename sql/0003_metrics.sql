-- The metrics hypertable (narrow model), owned by the maintainer role.
-- The chunk interval comes from configuration through the strata.chunk_interval setting.

CREATE TABLE strata.metrics (
  time        timestamptz NOT NULL,
  facility_id integer NOT NULL,
  series_id   integer NOT NULL,
  value       double precision
);

SELECT create_hypertable('strata.metrics', by_range('time', current_setting('strata.chunk_interval')::interval));

-- Per-facility, per-series reads on uncompressed (hot) chunks.
CREATE INDEX metrics_facility_series_time_idx ON strata.metrics (facility_id, series_id, time DESC);

-- Compression is a Timescale License feature; an Apache-only build lacks it (strata migrate reports it).
DO $$
BEGIN
  IF current_setting('timescaledb.license', true) IS DISTINCT FROM 'apache' THEN
    ALTER TABLE strata.metrics SET (
      timescaledb.compress,
      timescaledb.compress_segmentby = 'facility_id, series_id',
      timescaledb.compress_orderby = 'time'
    );
  END IF;
END
$$;

ALTER TABLE strata.metrics OWNER TO strata_maintainer;
GRANT INSERT ON strata.metrics TO strata_ingest;
