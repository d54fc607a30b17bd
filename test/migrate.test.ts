// strata migrate: fresh, repeated, configured chunk interval and tablespaces, tampered files,
// and a server without TimescaleDB.
import { chmodSync, cpSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { SQL_DIR, loadMigrations, migrate, preloads, unavailableCapabilities } from '../src/db/migrate.ts';
import { openDb } from '../src/db/open.ts';
import { openPglite } from '../src/db/pglite.ts';
import type { Db } from '../src/db/port.ts';
import { StrataError } from '../src/errors.ts';
import { createLogger } from '../src/log.ts';
import { Cluster } from './support/cluster.ts';
import { cluster, createDatabase, timescaleTargets } from './support/databases.ts';

/** Everything migrate could change: tables, columns, indexes, hypertable and compression settings, grants. */
async function schemaSnapshot(db: Db): Promise<unknown> {
  const q = async (sql: string) => (await db.query(sql)).rows;
  return {
    columns: await q(`SELECT table_name, column_name, data_type, is_nullable FROM information_schema.columns WHERE table_schema = 'strata' ORDER BY 1, 2`),
    indexes: await q(`SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'strata' ORDER BY 1`),
    hypertables: await q(`SELECT hypertable_name, owner, compression_enabled FROM timescaledb_information.hypertables ORDER BY 1`),
    dimensions: await q(`SELECT column_name, time_interval::text FROM timescaledb_information.dimensions ORDER BY 1`),
    compression: await q(`SELECT attname, segmentby_column_index, orderby_column_index, orderby_asc FROM timescaledb_information.compression_settings ORDER BY 1`),
    grants: await q(`SELECT grantee, table_name, privilege_type FROM information_schema.role_table_grants WHERE table_schema = 'strata' ORDER BY 1, 2, 3`),
    migrations: await q(`SELECT version, name, checksum FROM strata.schema_migrations ORDER BY 1`),
  };
}

describe.each(timescaleTargets())('migrate on $name', (target) => {
  let handle: Awaited<ReturnType<typeof target.open>>;
  let db: Db;
  beforeEach(async () => {
    handle = await target.open();
    db = handle.db;
  });
  afterEach(async () => handle.close());

  it('creates the metrics hypertable with its chunk interval and compression settings', async () => {
    const r = await migrate(db, { chunkInterval: '2 hours' });
    expect(r.applied).toEqual(loadMigrations().map((m) => m.name));
    expect(r.license).toBe('timescale');
    expect(r.unavailable).toEqual([]);

    const ht = await db.query(`SELECT owner, compression_enabled FROM timescaledb_information.hypertables WHERE hypertable_schema = 'strata' AND hypertable_name = 'metrics'`);
    expect(ht.rows).toEqual([{ owner: 'strata_maintainer', compression_enabled: true }]);
    const dim = await db.query(`SELECT column_name, time_interval FROM timescaledb_information.dimensions WHERE hypertable_name = 'metrics'`);
    expect(dim.rows).toHaveLength(1);
    expect(dim.rows[0]!.column_name).toBe('time');
    expect(String((await db.query(`SELECT time_interval::text AS i FROM timescaledb_information.dimensions WHERE hypertable_name = 'metrics'`)).rows[0]!.i)).toBe('02:00:00');
    const cs = await db.query(
      `SELECT attname, segmentby_column_index AS seg, orderby_column_index AS ord, orderby_asc AS asc
         FROM timescaledb_information.compression_settings WHERE hypertable_name = 'metrics' ORDER BY attname`,
    );
    expect(cs.rows).toEqual([
      { attname: 'facility_id', seg: 1, ord: null, asc: null },
      { attname: 'series_id', seg: 2, ord: null, asc: null },
      { attname: 'time', seg: null, ord: 1, asc: true },
    ]);
    const roles = await db.query<{ rolname: string }>(`SELECT rolname FROM pg_roles WHERE rolname LIKE 'strata\\_%' AND rolname NOT LIKE 'strata\\_reader\\_%' ORDER BY 1`);
    expect(roles.rows.map((x) => x.rolname)).toEqual(['strata_ingest', 'strata_maintainer', 'strata_reader']);
    const tables = await db.query<{ t: string }>(`SELECT tablename AS t FROM pg_tables WHERE schemaname = 'strata' ORDER BY 1`);
    expect(tables.rows.map((x) => x.t)).toEqual(['archive_catalog', 'audit_log', 'facilities', 'facility_grants', 'facility_series', 'ingest_ledger', 'job_journal', 'metrics', 'schema_migrations', 'series']);

    // The hypertable takes rows and compresses them with these settings.
    await db.query(`INSERT INTO strata.metrics SELECT t, 1, s, s * 1.5 FROM generate_series(now() - interval '5 hours', now(), interval '10 minutes') t, generate_series(1, 3) s`);
    const chunks = await db.query<{ c: string }>(`SELECT show_chunks('strata.metrics', older_than => now() - interval '2 hours')::text AS c`);
    expect(chunks.rows.length).toBeGreaterThan(0);
    for (const c of chunks.rows) await db.query('SELECT compress_chunk($1::regclass)', [c.c]);
    const compressed = await db.query<{ n: number }>(`SELECT count(*)::int AS n FROM timescaledb_information.chunks WHERE hypertable_name = 'metrics' AND is_compressed`);
    expect(compressed.rows[0]!.n).toBe(chunks.rows.length);
    expect((await db.query<{ n: number }>('SELECT count(*)::int AS n FROM strata.metrics')).rows[0]!.n).toBe(31 * 3);
  });

  it('changes nothing when run again', async () => {
    await migrate(db, { chunkInterval: '1 hour' });
    const before = await schemaSnapshot(db);
    const again = await migrate(db, { chunkInterval: '1 hour' });
    expect(again.applied).toEqual([]);
    expect(again.alreadyApplied).toBe(loadMigrations().length);
    expect(await schemaSnapshot(db)).toEqual(before);
  });

  it('treats equal intervals written differently as unchanged', async () => {
    await migrate(db, { chunkInterval: '1 day' });
    const lines: string[] = [];
    const r = await migrate(db, { chunkInterval: '24 hours', logger: createLogger('info', (l) => lines.push(l)) });
    expect(r.chunkInterval.before).toBe('1 day');
    expect(lines.join('\n')).not.toContain('chunk interval changed');
  });

  it('applies a new chunk interval from configuration to new chunks only', async () => {
    await migrate(db, { chunkInterval: '1 hour' });
    const r = await migrate(db, { chunkInterval: '1 day' });
    expect(r.applied).toEqual([]);
    expect(r.chunkInterval).toEqual({ before: '01:00:00', after: '1 day' });
    const dim = await db.query<{ i: string }>(`SELECT time_interval::text AS i FROM timescaledb_information.dimensions WHERE hypertable_name = 'metrics'`);
    expect(dim.rows[0]!.i).toBe('1 day');
  });

  it('refuses a migration file changed after it was applied', async () => {
    await migrate(db, { chunkInterval: '1 hour' });
    const dir = mkdtempSync(join(tmpdir(), 'strata-sql-'));
    cpSync(SQL_DIR, dir, { recursive: true });
    writeFileSync(join(dir, '0002_catalog.sql'), '-- edited\nSELECT 1;\n');
    const err = await migrate(db, { chunkInterval: '1 hour', dir: dir + '/' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StrataError);
    expect((err as Error).message).toBe('migration 0002_catalog was changed after it was applied; restore the original file');
  });

  it('rolls back a failing migration entirely and names it', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'strata-sql-'));
    cpSync(SQL_DIR, dir, { recursive: true });
    const next = String(loadMigrations().length + 1).padStart(4, '0');
    writeFileSync(join(dir, `${next}_broken.sql`), 'CREATE TABLE strata.half_done (a int);\nSELECT no_such_function();\n');
    const err = await migrate(db, { chunkInterval: '1 hour', dir: dir + '/' }).catch((e: unknown) => e);
    expect((err as Error).message).toMatch(new RegExp(`^migration ${next}_broken failed: function no_such_function\\(\\) does not exist \\(SQLSTATE 42883\\)`));
    const half = await db.query(`SELECT 1 FROM pg_tables WHERE schemaname = 'strata' AND tablename = 'half_done'`);
    expect(half.rows).toEqual([]);
    const versions = await db.query<{ n: number }>('SELECT max(version)::int AS n FROM strata.schema_migrations');
    expect(versions.rows[0]!.n).toBe(loadMigrations().length);
  });

  it('runs a no-transaction migration statement by statement: a failure names it, and a fixed re-run finishes it', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'strata-sql-'));
    cpSync(SQL_DIR, dir, { recursive: true });
    const next = String(loadMigrations().length + 1).padStart(4, '0');
    const file = join(dir, `${next}_outside.sql`);
    writeFileSync(file, '-- strata: no-transaction\nCREATE TABLE IF NOT EXISTS strata.outside (a int);\nSELECT no_such_function();\n');
    const err = await migrate(db, { chunkInterval: '1 hour', dir: dir + '/' }).catch((e: unknown) => e);
    expect((err as Error).message).toMatch(new RegExp(`^migration ${next}_outside failed: function no_such_function\\(\\) does not exist \\(SQLSTATE 42883\\); its statements are idempotent`));
    // Outside a transaction the first statement stayed; the migration is not recorded.
    expect((await db.query(`SELECT 1 FROM pg_tables WHERE schemaname = 'strata' AND tablename = 'outside'`)).rows).toHaveLength(1);
    writeFileSync(file, '-- strata: no-transaction\nCREATE TABLE IF NOT EXISTS strata.outside (a int);\nSELECT 1;\n');
    const r = await migrate(db, { chunkInterval: '1 hour', dir: dir + '/' });
    expect(r.applied).toEqual([`${next}_outside`]);
    writeFileSync(join(dir, `${next}_outside.sql`), '-- strata: no-transaction\nDO $$ BEGIN END $$;\n');
    expect(() => loadMigrations(dir + '/')).toThrow(`${next}_outside.sql: a no-transaction migration cannot hold dollar-quoted bodies (its statements are split at ';')`);
  });

  it('says how to create a configured tablespace that is missing, before changing anything', async () => {
    const err = await migrate(db, { chunkInterval: '1 hour', warmTablespace: 'warm_nowhere', coldTablespace: 'cold_nowhere' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StrataError);
    const msg = (err as Error).message;
    expect(msg).toContain('tablespace "warm_nowhere" of the warm tier (STRATA_WARM_TABLESPACE) does not exist');
    expect(msg).toContain("CREATE TABLESPACE warm_nowhere LOCATION '/srv/pg/warm_nowhere';");
    expect(msg).toContain('tablespace "cold_nowhere" of the cold tier (STRATA_COLD_TABLESPACE) does not exist');
    const schema = await db.query(`SELECT 1 FROM pg_namespace WHERE nspname = 'strata'`);
    expect(schema.rows).toEqual([]);
  });
});

describe('migrate with tablespaces on pglite-timescaledb', () => {
  it('accepts existing tablespaces and grants the maintainer CREATE on them', async () => {
    const db = await openPglite('pglite:memory');
    try {
      await db.ensureTablespace('warm_data');
      await db.ensureTablespace('cold_data');
      await migrate(db, { chunkInterval: '1 hour', warmTablespace: 'warm_data', coldTablespace: 'cold_data' });
      const r = await db.query<{ w: boolean; c: boolean }>(
        `SELECT has_tablespace_privilege('strata_maintainer', 'warm_data', 'CREATE') AS w, has_tablespace_privilege('strata_maintainer', 'cold_data', 'CREATE') AS c`,
      );
      expect(r.rows[0]).toEqual({ w: true, c: true });
    } finally {
      await db.close();
    }
  });
});

describe('a reopened embedded database directory', () => {
  it('has TimescaleDB fully loaded: rows reach chunks, the rollup trigger and compression work', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'strata-pglite-'));
    const first = await openPglite(`pglite:${dir}`);
    await migrate(first, { chunkInterval: '1 day' });
    await first.close();
    const db = await openPglite(`pglite:${dir}`);
    try {
      // Before the library is loaded, this INSERT fails: "invalid INSERT on the root table of hypertable".
      await db.exec(`INSERT INTO strata.metrics VALUES (now() - interval '3 days', 1, 1, 1), (now(), 1, 1, 2)`);
      const chunk = (await db.query<{ c: string }>(`SELECT c::text AS c FROM show_chunks('strata.metrics', older_than => now() - interval '2 days') c`)).rows[0]!.c;
      await db.query('SELECT compress_chunk($1::regclass)', [chunk]);
      const r = await db.query<{ n: number }>('SELECT count(*)::int AS n FROM strata.metrics');
      expect(r.rows[0]!.n).toBe(2);
    } finally {
      await db.close();
    }
  });
});

describe('migrate on native PostgreSQL without TimescaleDB', () => {
  const dbs: { drop(): Promise<void> }[] = [];
  afterAll(async () => {
    for (const d of dbs) await d.drop();
  });

  it('fails with a message saying what to install, and creates nothing', async () => {
    const t = await createDatabase(cluster().adminUrl(), 'strata_noext');
    dbs.push(t);
    const db = await openDb(t.url);
    try {
      const err = await migrate(db, { chunkInterval: '1 hour' }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(StrataError);
      expect((err as StrataError).code).toBe('timescaledb_missing');
      const msg = (err as Error).message;
      expect(msg).toContain(`the TimescaleDB extension is not installed on the server of database "${t.name}"`);
      expect(msg).toContain('timescaledb-2-postgresql-15');
      expect(msg).toContain("shared_preload_libraries = 'timescaledb'");
      expect(msg).not.toContain('strata-test-pw');
      const schema = await db.query(`SELECT 1 FROM pg_namespace WHERE nspname = 'strata'`);
      expect(schema.rows).toEqual([]);
    } finally {
      await db.close();
    }
  });
});

describe('migrate on a server where TimescaleDB is installed but not preloaded', () => {
  // A relocated copy of Debian's PostgreSQL with a stand-in timescaledb.control, so the extension is
  // available to CREATE EXTENSION while shared_preload_libraries lacks it: the commonest setup mistake.
  // (The stand-in holds no TimescaleDB code; the real library would end the session with a FATAL.)
  let pg: Cluster | undefined;
  beforeAll(async () => {
    const root = mkdtempSync(join(tmpdir(), 'strata-pgcopy-'));
    chmodSync(root, 0o755);
    cpSync('/usr/lib/postgresql/15', join(root, 'usr/lib/postgresql/15'), { recursive: true });
    cpSync('/usr/share/postgresql/15', join(root, 'usr/share/postgresql/15'), { recursive: true });
    const ext = join(root, 'usr/share/postgresql/15/extension');
    writeFileSync(join(ext, 'timescaledb.control'), "comment = 'stand-in'\ndefault_version = '2.28.3'\nrelocatable = false\n");
    writeFileSync(join(ext, 'timescaledb--2.28.3.sql'), 'SELECT 1;\n');
    pg = await Cluster.create({ pgBin: join(root, 'usr/lib/postgresql/15/bin') });
    tempRoots.push(root);
  });
  const tempRoots: string[] = [];
  afterAll(async () => {
    await pg?.destroy();
    for (const r of tempRoots) rmSync(r, { recursive: true, force: true });
  });

  it('says exactly what to change before CREATE EXTENSION, and creates nothing', async () => {
    const db = await openDb(pg!.adminUrl());
    try {
      const err = (await migrate(db, { chunkInterval: '1 hour' }).catch((e: unknown) => e)) as StrataError;
      expect(err).toBeInstanceOf(StrataError);
      expect(err.code).toBe('timescaledb_not_preloaded');
      expect(err.message).toContain(`TimescaleDB is installed on the server of database "postgres"`);
      expect(err.message).toContain(`but not preloaded (shared_preload_libraries = '')`);
      expect(err.message).toContain(`ALTER SYSTEM SET shared_preload_libraries = 'timescaledb';`);
      expect(err.message).toContain(`in ${pg!.dataDir}/postgresql.conf`); // a superuser may read config_file
      expect(err.message).toContain('restart PostgreSQL');
      expect((await db.query(`SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'`)).rows).toEqual([]);
      expect((await db.query(`SELECT 1 FROM pg_namespace WHERE nspname = 'strata'`)).rows).toEqual([]);
    } finally {
      await db.close();
    }
  });

  it('reads shared_preload_libraries as a list of names', () => {
    expect(preloads('timescaledb')).toBe(true);
    expect(preloads('pg_stat_statements, "timescaledb"')).toBe(true);
    expect(preloads('pg_stat_statements')).toBe(false);
    expect(preloads('timescaledb_toolkit')).toBe(false);
    expect(preloads('')).toBe(false);
  });
});

describe('TimescaleDB license', () => {
  // The license can only be set at server start, so an Apache-only server cannot be started here;
  // this is the mapping migrate reports from `SHOW timescaledb.license`.
  it('names what an Apache-only build lacks, and nothing for the Timescale license', () => {
    expect(unavailableCapabilities('apache')).toEqual(['compression (warm and cold tiers)', 'move_chunk (tablespace tiering)', 'custom jobs']);
    expect(unavailableCapabilities('timescale')).toEqual([]);
  });
});
