-- strata: no-transaction
-- strata: timescale-license
-- Hourly rollup of strata.metrics for long-range reads. A security_barrier view (0006) cannot be
-- flattened, so aggregates through strata.facility_metrics lose TimescaleDB's aggregate pushdown;
-- over 30 days of compressed chunks that costs ~3×. Readers read long ranges from this continuous
-- aggregate instead, through a barrier view filtered like facility_metrics. Continuous aggregates
-- cannot be created inside a transaction block, so every statement here runs on its own and is
-- idempotent.
CREATE MATERIALIZED VIEW IF NOT EXISTS strata.metrics_hourly
  WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
  SELECT time_bucket(INTERVAL '1 hour', time) AS bucket, facility_id, series_id,
         count(*) AS samples, sum(value) AS sum, min(value) AS min, max(value) AS max
    FROM strata.metrics
   GROUP BY 1, 2, 3
  WITH NO DATA;

-- The refresh job runs as the aggregate's owner, which must be able to log in, so the aggregate
-- stays with the role that migrates (not the NOLOGIN maintainer); the maintainer, which owns the
-- readers' view below, may read it.
GRANT SELECT ON strata.metrics_hourly TO strata_maintainer;

-- Materialize everything up to an hour ago every 30 minutes (changed buckets only); the last hour
-- comes from the raw rows at query time (materialized_only = false).
SELECT add_continuous_aggregate_policy('strata.metrics_hourly', start_offset => NULL, end_offset => INTERVAL '1 hour', schedule_interval => INTERVAL '30 minutes', if_not_exists => true);

CREATE OR REPLACE VIEW strata.facility_metrics_hourly WITH (security_barrier) AS
  SELECT bucket, facility_id, series_id, samples, sum, min, max
    FROM strata.metrics_hourly
   WHERE facility_id = ANY (ARRAY(SELECT g.facility_id FROM strata.facility_grants g WHERE g.role_name = current_user));

ALTER VIEW strata.facility_metrics_hourly OWNER TO strata_maintainer;

GRANT SELECT ON strata.facility_metrics_hourly TO strata_reader;
