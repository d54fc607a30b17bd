-- The per-facility series limit, held by the database for every gateway: series are counted per
-- facility by triggers on strata.series, and the gateway creates series only through
-- strata.create_series, which locks the facility's counter row so creators of one facility take
-- turns across all gateways and never pass the limit.

-- No series is written between the back-fill below and the triggers that keep the count.
LOCK TABLE strata.series IN SHARE ROW EXCLUSIVE MODE;

CREATE TABLE strata.facility_series (
  facility_id integer PRIMARY KEY REFERENCES strata.facilities (id) ON DELETE CASCADE,
  series      bigint NOT NULL
);

INSERT INTO strata.facility_series (facility_id, series)
SELECT facility_id, count(*) FROM strata.series GROUP BY facility_id;

-- Counts what every statement on strata.series changed, once per statement and facility, in
-- facility order (so two statements touching several facilities lock their counters in one order).
-- SECURITY DEFINER: any role that may write strata.series keeps the count right.
CREATE FUNCTION strata.count_series() RETURNS trigger
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  IF TG_OP = 'TRUNCATE' THEN
    UPDATE strata.facility_series SET series = 0 WHERE series <> 0;
  ELSIF TG_OP = 'INSERT' THEN
    INSERT INTO strata.facility_series AS c (facility_id, series)
    SELECT r.facility_id, count(*) FROM new_series r GROUP BY r.facility_id ORDER BY r.facility_id
    ON CONFLICT (facility_id) DO UPDATE SET series = c.series + excluded.series;
  ELSIF TG_OP = 'DELETE' THEN
    INSERT INTO strata.facility_series AS c (facility_id, series)
    SELECT r.facility_id, -count(*) FROM old_series r GROUP BY r.facility_id ORDER BY r.facility_id
    ON CONFLICT (facility_id) DO UPDATE SET series = c.series + excluded.series;
  ELSE
    INSERT INTO strata.facility_series AS c (facility_id, series)
    SELECT d.facility_id, sum(d.n) FROM (SELECT facility_id, 1 AS n FROM new_series UNION ALL SELECT facility_id, -1 FROM old_series) d
     GROUP BY d.facility_id HAVING sum(d.n) <> 0 ORDER BY d.facility_id
    ON CONFLICT (facility_id) DO UPDATE SET series = c.series + excluded.series;
  END IF;
  RETURN NULL;
END
$$;

CREATE TRIGGER count_inserted AFTER INSERT ON strata.series REFERENCING NEW TABLE AS new_series
  FOR EACH STATEMENT EXECUTE FUNCTION strata.count_series();
CREATE TRIGGER count_deleted AFTER DELETE ON strata.series REFERENCING OLD TABLE AS old_series
  FOR EACH STATEMENT EXECUTE FUNCTION strata.count_series();
CREATE TRIGGER count_updated AFTER UPDATE ON strata.series REFERENCING OLD TABLE AS old_series NEW TABLE AS new_series
  FOR EACH STATEMENT EXECUTE FUNCTION strata.count_series();
CREATE TRIGGER count_truncated AFTER TRUNCATE ON strata.series
  FOR EACH STATEMENT EXECUTE FUNCTION strata.count_series();

-- The ids of a facility's series keys (measurements[i], fields[i], tags[i] as JSON text), creating
-- missing ones in input order while the facility has fewer than series_limit series. One row per
-- input key that has an id: its ordinal n (from 1), the id, and whether this call created it; a key
-- left without a row was not created because of the limit.
-- The counter row is locked first (FOR UPDATE), and each later statement reads a snapshot taken
-- after the lock: every series another creator committed is seen, and another writer's uncommitted
-- series cannot commit before this call does (its trigger waits for the same row; should both
-- write the same key, the deadlock detector cancels one of them, SQLSTATE 40P01).
CREATE FUNCTION strata.create_series(facility_id integer, series_limit integer, measurements text[], fields text[], tags text[])
  RETURNS TABLE (n integer, id integer, created boolean)
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
  -- Planned for each call's arrays: the cached generic plan PL/pgSQL switches to after five calls
  -- assumes a few keys and took over a minute for 10,000 (a custom plan: under a second).
  SET plan_cache_mode = force_custom_plan
AS $$
#variable_conflict use_column
DECLARE
  fid constant integer := create_series.facility_id;
  room bigint;
BEGIN
  IF create_series.series_limit IS NULL OR create_series.series_limit < 0 THEN
    RAISE EXCEPTION 'series_limit must be a non-negative integer, not %', coalesce(create_series.series_limit::text, 'NULL') USING ERRCODE = 'invalid_parameter_value';
  END IF;
  SELECT create_series.series_limit - c.series INTO room FROM strata.facility_series c WHERE c.facility_id = fid FOR UPDATE;
  IF NOT FOUND THEN
    INSERT INTO strata.facility_series (facility_id, series) VALUES (fid, 0) ON CONFLICT DO NOTHING;
    SELECT create_series.series_limit - c.series INTO room FROM strata.facility_series c WHERE c.facility_id = fid FOR UPDATE;
  END IF;
  RETURN QUERY
  WITH input AS (
    SELECT u.m, u.f, u.t::jsonb AS t, u.n::integer AS n
      FROM unnest(create_series.measurements, create_series.fields, create_series.tags) WITH ORDINALITY AS u(m, f, t, n)),
  present AS (
    SELECT i.n, s.id FROM input i
      JOIN strata.series s ON s.facility_id = fid AND s.measurement = i.m AND s.field = i.f AND s.tags = i.t),
  wanted AS (
    SELECT k.m, k.f, k.t, k.first FROM (
      SELECT i.m, i.f, i.t, min(i.n) AS first FROM input i
       WHERE NOT EXISTS (SELECT 1 FROM present p WHERE p.n = i.n)
       GROUP BY i.m, i.f, i.t) k
     ORDER BY k.first LIMIT greatest(room, 0)),
  ins AS (
    INSERT INTO strata.series AS s (facility_id, measurement, field, tags)
    SELECT fid, w.m, w.f, w.t FROM wanted w ORDER BY w.first
    ON CONFLICT (facility_id, measurement, field, tags) DO NOTHING
    RETURNING s.id, s.measurement, s.field, s.tags)
  SELECT p.n, p.id, false FROM present p
  UNION ALL
  SELECT i.n, x.id, true FROM input i JOIN ins x ON x.measurement = i.m AND x.field = i.f AND x.tags = i.t;
END
$$;

-- Both functions run as strata_maintainer (who may write every facility's catalog rows), not as
-- their caller. The gateway gets EXECUTE instead of INSERT on strata.series, so the limit holds
-- for every gateway that writes here.
GRANT SELECT, INSERT, UPDATE ON strata.facility_series TO strata_maintainer;
GRANT INSERT ON strata.series TO strata_maintainer;
ALTER FUNCTION strata.count_series() OWNER TO strata_maintainer;
ALTER FUNCTION strata.create_series(integer, integer, text[], text[], text[]) OWNER TO strata_maintainer;
REVOKE EXECUTE ON FUNCTION strata.count_series() FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION strata.create_series(integer, integer, text[], text[], text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION strata.create_series(integer, integer, text[], text[], text[]) TO strata_ingest;
REVOKE INSERT ON strata.series FROM strata_ingest;
DROP POLICY ingest_insert ON strata.series;

-- Row security as on the other catalog tables: maintainers only (readers and the gateway get no
-- privilege on the counts).
ALTER TABLE strata.facility_series ENABLE ROW LEVEL SECURITY;
ALTER TABLE strata.facility_series FORCE ROW LEVEL SECURITY;
CREATE POLICY maintainer_all ON strata.facility_series USING (pg_has_role(current_user, 'strata_maintainer', 'MEMBER')) WITH CHECK (pg_has_role(current_user, 'strata_maintainer', 'MEMBER'));
