-- Facility isolation (DESIGN §3). TimescaleDB refuses row security on a compressed hypertable, so
-- facility readers get no privilege on strata.metrics or its chunks: they read the security_barrier
-- view below, which the maintainer role owns, filtered by the caller's grants. current_user is the
-- reader inside the view (a view does not change it; a SECURITY DEFINER function would, which is
-- why none is used). The ARRAY(...) becomes an InitPlan, so the filter reaches the compressed
-- chunks' segment index (facility_id = ANY($0)) and chunk exclusion still applies.
CREATE VIEW strata.facility_metrics WITH (security_barrier) AS
  SELECT time, facility_id, series_id, value
    FROM strata.metrics
   WHERE facility_id = ANY (ARRAY(SELECT g.facility_id FROM strata.facility_grants g WHERE g.role_name = current_user));

-- The facilities the caller may read (what the catalog policies below consult).
CREATE VIEW strata.reader_facilities WITH (security_barrier) AS
  SELECT g.facility_id FROM strata.facility_grants g WHERE g.role_name = current_user;

GRANT SELECT ON strata.facility_grants TO strata_maintainer;
ALTER VIEW strata.facility_metrics OWNER TO strata_maintainer;
ALTER VIEW strata.reader_facilities OWNER TO strata_maintainer;
GRANT SELECT ON strata.facility_metrics TO strata_reader;
-- Every role reading a catalog evaluates the reader policy, so every role may read this view; it
-- only ever shows the caller's own grants.
GRANT SELECT ON strata.reader_facilities TO PUBLIC;

-- Readers see catalog rows of their facilities only (never token hashes or other facilities'
-- per-facility archive counts): column grants, plus row security forced even on the owner.
GRANT SELECT (id, code, region, name, created_at) ON strata.facilities TO strata_reader;
GRANT SELECT ON strata.series TO strata_reader;
GRANT SELECT (id, hypertable, region, range_start, range_end, storage_class, state, archived_at, retain_until) ON strata.archive_catalog TO strata_reader;

ALTER TABLE strata.facilities ENABLE ROW LEVEL SECURITY;
ALTER TABLE strata.facilities FORCE ROW LEVEL SECURITY;
ALTER TABLE strata.series ENABLE ROW LEVEL SECURITY;
ALTER TABLE strata.series FORCE ROW LEVEL SECURITY;
ALTER TABLE strata.facility_grants ENABLE ROW LEVEL SECURITY;
ALTER TABLE strata.facility_grants FORCE ROW LEVEL SECURITY;
ALTER TABLE strata.archive_catalog ENABLE ROW LEVEL SECURITY;
ALTER TABLE strata.archive_catalog FORCE ROW LEVEL SECURITY;

-- Policies apply TO PUBLIC and test current_user, because through a view the table is read with the
-- view owner's privileges while current_user stays the caller. Superusers bypass row security.
-- Maintainers (workers, administration) see and change everything.
CREATE POLICY maintainer_all ON strata.facilities USING (pg_has_role(current_user, 'strata_maintainer', 'MEMBER')) WITH CHECK (pg_has_role(current_user, 'strata_maintainer', 'MEMBER'));
CREATE POLICY maintainer_all ON strata.series USING (pg_has_role(current_user, 'strata_maintainer', 'MEMBER')) WITH CHECK (pg_has_role(current_user, 'strata_maintainer', 'MEMBER'));
CREATE POLICY maintainer_all ON strata.facility_grants USING (pg_has_role(current_user, 'strata_maintainer', 'MEMBER')) WITH CHECK (pg_has_role(current_user, 'strata_maintainer', 'MEMBER'));
CREATE POLICY maintainer_all ON strata.archive_catalog USING (pg_has_role(current_user, 'strata_maintainer', 'MEMBER')) WITH CHECK (pg_has_role(current_user, 'strata_maintainer', 'MEMBER'));

-- The gateway authenticates every facility's token and keeps every facility's series.
CREATE POLICY ingest_read ON strata.facilities FOR SELECT USING (pg_has_role(current_user, 'strata_ingest', 'MEMBER'));
CREATE POLICY ingest_read ON strata.series FOR SELECT USING (pg_has_role(current_user, 'strata_ingest', 'MEMBER'));
CREATE POLICY ingest_insert ON strata.series FOR INSERT WITH CHECK (pg_has_role(current_user, 'strata_ingest', 'MEMBER'));

-- Readers: their own grants (through the views) and their facilities' catalog rows.
CREATE POLICY reader_own ON strata.facility_grants FOR SELECT USING (role_name = current_user);
CREATE POLICY reader_own ON strata.facilities FOR SELECT USING (id IN (SELECT facility_id FROM strata.reader_facilities));
CREATE POLICY reader_own ON strata.series FOR SELECT USING (facility_id IN (SELECT facility_id FROM strata.reader_facilities));
CREATE POLICY reader_own ON strata.archive_catalog FOR SELECT USING (facility_ids && ARRAY(SELECT facility_id FROM strata.reader_facilities));
