// Name patterns, defined once: configuration, the facility registry, the database ports and the
// restore command check names with these, and sql/0002_catalog.sql's CHECK constraints carry the same
// expressions (test/patterns.test.ts compares them). Ground floor: imports nothing.

/** A lowercase PostgreSQL identifier: roles, tablespaces, channels (at most 63 bytes). */
export const IDENTIFIER = /^[a-z_][a-z0-9_]{0,62}$/;
/** A region: lowercase letters, digits and hyphens ("eu-west-1"). */
export const REGION = /^[a-z0-9][a-z0-9-]{0,62}$/;
/** A facility code: 1–48 lowercase letters, digits, "_" or "-", starting with a letter or digit. */
export const FACILITY_CODE = /^[a-z0-9][a-z0-9_-]{0,47}$/;
/** A table name for restore, optionally schema-qualified ("restored.chunk_1"). */
export const QUALIFIED_IDENTIFIER = new RegExp(`^${IDENTIFIER.source.slice(1, -1)}(\\.${IDENTIFIER.source.slice(1, -1)})?$`);
