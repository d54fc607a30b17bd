-- Facilities, their readers' grants and the series catalog.

CREATE TABLE strata.facilities (
  id          integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  code        text NOT NULL UNIQUE CHECK (code ~ '^[a-z0-9][a-z0-9_-]{0,47}$'),
  region      text NOT NULL CHECK (region ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
  name        text,
  -- SHA-256 of the ingest token. Tokens carry 256 random bits, so a fast hash is safe and lets the
  -- gateway look a token up by its hash.
  token_hash  bytea NOT NULL UNIQUE CHECK (length(token_hash) = 32),
  reader_role name NOT NULL UNIQUE,
  created_at  timestamptz NOT NULL DEFAULT now()
);

-- Which database roles may read which facilities' metrics.
CREATE TABLE strata.facility_grants (
  role_name   name NOT NULL,
  facility_id integer NOT NULL REFERENCES strata.facilities (id) ON DELETE CASCADE,
  granted_at  timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (role_name, facility_id)
);

-- A series is (facility, measurement, field key, sorted tag set).
CREATE TABLE strata.series (
  id          integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  facility_id integer NOT NULL REFERENCES strata.facilities (id),
  measurement text NOT NULL,
  field       text NOT NULL,
  tags        jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(tags) = 'object'),
  created_at  timestamptz NOT NULL DEFAULT now(),
  UNIQUE (facility_id, measurement, field, tags)
);

GRANT SELECT ON strata.facilities TO strata_ingest, strata_maintainer;
GRANT SELECT, INSERT ON strata.series TO strata_ingest;
GRANT SELECT ON strata.series TO strata_maintainer;
