-- Facility lifecycle: tokens that can be rotated (the previous one kept for a grace period) and
-- revoked, facilities that can be disabled and retired, every change announced to the gateways at
-- once, and every admin action recorded.

-- A revoked token leaves the facility without one until the next rotation.
ALTER TABLE strata.facilities ALTER COLUMN token_hash DROP NOT NULL;
ALTER TABLE strata.facilities
  ADD COLUMN previous_token_hash bytea UNIQUE CHECK (length(previous_token_hash) = 32),
  ADD COLUMN previous_token_expires_at timestamptz,
  -- Writes are refused with 403 while set.
  ADD COLUMN disabled_at timestamptz,
  -- Removed with its data kept: no token, no reader role, writes refused; the code stays taken.
  ADD COLUMN retired_at timestamptz,
  ADD CONSTRAINT facilities_previous_token CHECK ((previous_token_hash IS NULL) = (previous_token_expires_at IS NULL));

-- Every change to the facilities, by Strata or by hand, reaches every gateway listening on the
-- channel when its transaction commits; they reload the directory (src/ingest/auth.ts).
CREATE FUNCTION strata.notify_facilities() RETURNS trigger
  LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  PERFORM pg_notify('strata_facilities', TG_OP);
  RETURN NULL;
END
$$;

CREATE TRIGGER facilities_notify AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON strata.facilities
  FOR EACH STATEMENT EXECUTE FUNCTION strata.notify_facilities();

-- Who did what to which facility, and when: the database role (session_user, which SET ROLE does
-- not change) and the operating-system user the command ran as (as the client reported it).
CREATE TABLE strata.audit_log (
  id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  at        timestamptz NOT NULL DEFAULT now(),
  db_role   name NOT NULL DEFAULT session_user,
  os_user   text,
  action    text NOT NULL,
  facility  text,
  details   jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX audit_log_at ON strata.audit_log (at);

-- Append-only for everybody but its owner; maintainers read it.
REVOKE ALL ON strata.audit_log FROM PUBLIC;
GRANT SELECT ON strata.audit_log TO strata_maintainer;
