// Numbered SQL migrations from sql/: each applied in its own transaction (or, when marked
// `-- strata: no-transaction`, statement by statement) and recorded in strata.schema_migrations;
// re-running is a no-op. TimescaleDB is required.
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { StrataError, errorText, sqlState } from '../errors.ts';
import { silentLogger, type Logger } from '../log.ts';
import type { Db } from './port.ts';
import { ensureRoles } from './roles.ts';
import { boundRollupWindow } from './rollup-window.ts';
import { IDENTIFIER } from '../patterns.ts';

export const SQL_DIR = fileURLToPath(new URL('../../sql/', import.meta.url));
const LOCK_KEY = 0x5354_5241; // "STRA": serialises concurrent `strata migrate` runs

export interface Migration {
  version: number;
  name: string;
  sql: string;
  checksum: string;
  /**
   * `-- strata: no-transaction` on its first line: statements TimescaleDB refuses inside a transaction
   * block (continuous aggregates). Each statement (ended by `;` at a line end) runs on its own, so
   * each must be idempotent (IF NOT EXISTS, OR REPLACE, if_not_exists => true).
   */
  noTransaction: boolean;
  /** `-- strata: timescale-license`: skipped (and reported) on an Apache-only TimescaleDB build. */
  needsTimescaleLicense: boolean;
}

export interface MigrateOptions {
  chunkInterval: string;
  /** The archive age (STRATA_ARCHIVE_AFTER): the hourly rollup's refresh window reaches back no further (rollup-window.ts). */
  archiveAfter?: string;
  warmTablespace?: string | undefined;
  coldTablespace?: string | undefined;
  logger?: Logger;
  dir?: string;
}

export interface MigrateResult {
  applied: string[];
  alreadyApplied: number;
  timescaledbVersion: string;
  license: string;
  /** Capabilities this TimescaleDB build lacks (an Apache-only build has no compression, move_chunk or jobs). */
  unavailable: string[];
  chunkInterval: { before: string | null; after: string };
}

/** Compression, move_chunk and custom jobs are Timescale License features, missing from Apache-only builds. */
export function unavailableCapabilities(license: string): string[] {
  return license === 'apache' ? ['compression (warm and cold tiers)', 'move_chunk (tablespace tiering)', 'custom jobs'] : [];
}

export function loadMigrations(dir = SQL_DIR): Migration[] {
  const files = readdirSync(dir).filter((f) => f.endsWith('.sql')).sort();
  const out: Migration[] = [];
  for (const file of files) {
    const m = /^(\d{4})_([a-z0-9_]+)\.sql$/.exec(file);
    if (!m) throw new StrataError('migration_name', `${dir}${file}: migration files are named NNNN_name.sql`);
    const version = Number(m[1]);
    const expected = out.length + 1;
    if (version !== expected) throw new StrataError('migration_order', `${file}: expected migration number ${String(expected).padStart(4, '0')}`);
    const sql = readFileSync(`${dir}/${file}`, 'utf8');
    const head = sql.split('\n', 3).join('\n');
    const noTransaction = /^-- strata: no-transaction$/m.test(head);
    if (noTransaction && sql.includes('$$')) throw new StrataError('migration_format', `${file}: a no-transaction migration cannot hold dollar-quoted bodies (its statements are split at ';')`);
    out.push({
      version,
      name: file.replace(/\.sql$/, ''),
      sql,
      checksum: createHash('sha256').update(sql).digest('hex'),
      noTransaction,
      needsTimescaleLicense: /^-- strata: timescale-license$/m.test(head),
    });
  }
  return out;
}

async function where(db: Db): Promise<string> {
  const r = await db.query<{ db: string }>('SELECT current_database() AS db');
  return `database "${r.rows[0]?.db}" (${db.target})`;
}

/** TimescaleDB must be installed on the server; says what to install when it is not. */
async function ensureTimescale(db: Db): Promise<void> {
  const r = await db.query<{ installed: string | null; server: string }>(
    `SELECT (SELECT installed_version FROM pg_available_extensions WHERE name = 'timescaledb') AS installed,
            current_setting('server_version_num') AS server,
            EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb') AS available`,
  );
  const row = r.rows[0] as { installed: string | null; server: string; available: boolean };
  if (!row.available) {
    const major = Math.floor(Number(row.server) / 10000);
    throw new StrataError(
      'timescaledb_missing',
      `the TimescaleDB extension is not installed on the server of ${await where(db)}. ` +
        `Install TimescaleDB 2.x for PostgreSQL ${major} (package timescaledb-2-postgresql-${major} from Timescale's repository, ` +
        `or run the timescale/timescaledb-ha image), set shared_preload_libraries = 'timescaledb' in postgresql.conf, ` +
        `restart PostgreSQL, then run strata migrate again.`,
    );
  }
  await ensurePreloaded(db);
  if (row.installed) return;
  try {
    await db.exec('CREATE EXTENSION IF NOT EXISTS timescaledb');
  } catch (err) {
    const hint =
      sqlState(err) === '42501'
        ? 'a superuser must run CREATE EXTENSION timescaledb in this database once'
        : `check that shared_preload_libraries includes 'timescaledb' and PostgreSQL was restarted`;
    throw new StrataError('timescaledb_create', `cannot create the timescaledb extension in ${await where(db)}: ${errorText(err)}; ${hint}`, { cause: err });
  }
}

/** `timescaledb` among the libraries of a shared_preload_libraries value (a list of names, maybe quoted). */
export function preloads(setting: string): boolean {
  return setting.split(',').some((name) => name.trim().replace(/^"(.*)"$/, '$1') === 'timescaledb');
}

/**
 * TimescaleDB installed on the server but not preloaded is the commonest setup mistake: the first
 * statement that loads the library (CREATE EXTENSION among them) ends the session with a FATAL.
 * Checked first, so the fix is said plainly. The embedded database loads it itself.
 */
async function ensurePreloaded(db: Db): Promise<void> {
  if (db.kind !== 'postgres') return;
  const setting = (await db.query<{ p: string }>(`SELECT current_setting('shared_preload_libraries') AS p`)).rows[0]?.p ?? '';
  if (preloads(setting)) return;
  // config_file is readable by superusers and pg_read_all_settings only.
  const file = await db.query<{ f: string }>(`SELECT current_setting('config_file') AS f`).then((r) => r.rows[0]?.f ?? null, () => null);
  const wanted = setting.trim() === '' ? 'timescaledb' : `${setting}, timescaledb`;
  throw new StrataError(
    'timescaledb_not_preloaded',
    `TimescaleDB is installed on the server of ${await where(db)} but not preloaded (shared_preload_libraries = '${setting}'). ` +
      `As a superuser run ALTER SYSTEM SET shared_preload_libraries = '${wanted}'; ` +
      `(or set shared_preload_libraries = '${wanted}' in ${file ?? 'postgresql.conf'}), restart PostgreSQL, then run strata migrate again.`,
  );
}

/** Configured tablespaces must exist before anything changes; says how to create them. */
async function checkTablespacesExist(db: Db, tablespaces: { name: string; setting: string; tier: string }[]): Promise<void> {
  const problems: string[] = [];
  for (const { name, setting, tier } of tablespaces) {
    const r = await db.query('SELECT 1 FROM pg_tablespace WHERE spcname = $1', [name]);
    if (r.rows.length > 0) continue;
    problems.push(
      `tablespace "${name}" of the ${tier} tier (${setting}) does not exist. Create it as a superuser on a directory owned by the postgres OS user, e.g.\n` +
        `    mkdir -p /srv/pg/${name} && chown postgres: /srv/pg/${name}\n` +
        `    CREATE TABLESPACE ${name} LOCATION '/srv/pg/${name}';\n` +
        `    GRANT CREATE ON TABLESPACE ${name} TO strata_maintainer;`,
    );
  }
  if (problems.length > 0) throw new StrataError('tablespace_missing', problems.join('\n'));
}

/** The maintainer moves chunks into the tablespaces, so it needs CREATE on them. */
async function grantTablespaces(db: Db, names: string[]): Promise<void> {
  for (const name of names) {
    const r = await db.query<{ ok: boolean }>(`SELECT has_tablespace_privilege('strata_maintainer', $1, 'CREATE') AS ok`, [name]);
    if (r.rows[0]?.ok) continue;
    try {
      await db.exec(`GRANT CREATE ON TABLESPACE ${name} TO strata_maintainer`);
    } catch (err) {
      throw new StrataError(
        'tablespace_privilege',
        `strata_maintainer cannot create objects in tablespace "${name}" and granting it failed (${errorText(err)}); ` +
          `as the tablespace owner or a superuser run: GRANT CREATE ON TABLESPACE ${name} TO strata_maintainer;`,
        { cause: err },
      );
    }
  }
}

/** Runs a no-transaction migration statement by statement, then records it. */
async function applyWithoutTransaction(db: Db, m: Migration): Promise<boolean> {
  const seen = await db.query('SELECT 1 FROM strata.schema_migrations WHERE version = $1', [m.version]);
  if (seen.rows.length > 0) return false;
  const statements = m.sql
    .split(/;[ \t]*$/m)
    .map((s) => s.trim())
    .filter((s) => s.replace(/--.*$/gm, '').trim() !== '');
  for (const statement of statements) {
    try {
      await db.exec(statement);
    } catch (err) {
      throw new StrataError('migration_failed', `migration ${m.name} failed: ${errorText(err)}${sqlState(err) ? ` (SQLSTATE ${sqlState(err)})` : ''}; its statements are idempotent, so run strata migrate again once fixed`, { cause: err });
    }
  }
  const r = await db.query('INSERT INTO strata.schema_migrations (version, name, checksum) VALUES ($1, $2, $3) ON CONFLICT (version) DO NOTHING', [m.version, m.name, m.checksum]);
  return r.rowCount > 0;
}

async function chunkInterval(db: Db): Promise<string | null> {
  const r = await db.query<{ i: string }>(
    `SELECT time_interval::text AS i FROM timescaledb_information.dimensions
      WHERE hypertable_schema = 'strata' AND hypertable_name = 'metrics' AND dimension_number = 1`,
  );
  return r.rows[0]?.i ?? null;
}

export async function migrate(db: Db, opts: MigrateOptions): Promise<MigrateResult> {
  const log = opts.logger ?? silentLogger;
  const migrations = loadMigrations(opts.dir);
  const named = [
    { name: opts.warmTablespace, setting: 'STRATA_WARM_TABLESPACE', tier: 'warm' },
    { name: opts.coldTablespace, setting: 'STRATA_COLD_TABLESPACE', tier: 'cold' },
  ].filter((t): t is { name: string; setting: string; tier: string } => !!t.name);
  const tablespaces = named.map((t) => t.name);
  for (const t of tablespaces) if (!IDENTIFIER.test(t)) throw new StrataError('tablespace_name', `invalid tablespace name ${JSON.stringify(t)}`);
  await checkTablespacesExist(db, named);
  await ensureTimescale(db);
  await ensureRoles(db); // before 0001, which would race another database's migration for them

  await db.transaction(async (tx) => {
    await tx.query('SELECT pg_advisory_xact_lock($1)', [LOCK_KEY]);
    await tx.exec(`CREATE SCHEMA IF NOT EXISTS strata;
      CREATE TABLE IF NOT EXISTS strata.schema_migrations (
        version    integer PRIMARY KEY,
        name       text NOT NULL,
        checksum   text NOT NULL,
        applied_at timestamptz NOT NULL DEFAULT now()
      );`);
  });
  const before = await db.query<{ version: number; name: string; checksum: string }>(
    'SELECT version, name, checksum FROM strata.schema_migrations ORDER BY version',
  );
  for (const row of before.rows) {
    const m = migrations.find((x) => x.version === row.version);
    if (!m) throw new StrataError('migration_unknown', `${await where(db)} has migration ${row.name}, which this version of Strata does not know; upgrade Strata`);
    if (m.checksum !== row.checksum) throw new StrataError('migration_changed', `migration ${m.name} was changed after it was applied; restore the original file`);
  }

  const license = (await db.query<{ l: string | null }>(`SELECT current_setting('timescaledb.license', true) AS l`)).rows[0]?.l ?? 'unknown';
  const applied: string[] = [];
  const skipped: string[] = [];
  for (const m of migrations) {
    if (m.needsTimescaleLicense && license === 'apache') {
      skipped.push(m.name);
      continue;
    }
    if (m.noTransaction) {
      if (await applyWithoutTransaction(db, m)) {
        applied.push(m.name);
        log.info('migration applied', { migration: m.name });
      }
      continue;
    }
    const done = await db.transaction(async (tx) => {
      await tx.query('SELECT pg_advisory_xact_lock($1)', [LOCK_KEY]);
      const seen = await tx.query('SELECT 1 FROM strata.schema_migrations WHERE version = $1', [m.version]);
      if (seen.rows.length > 0) return false;
      await tx.query(`SELECT set_config('strata.chunk_interval', $1, true)`, [opts.chunkInterval]);
      try {
        await tx.exec(m.sql);
      } catch (err) {
        throw new StrataError('migration_failed', `migration ${m.name} failed: ${errorText(err)}${sqlState(err) ? ` (SQLSTATE ${sqlState(err)})` : ''}`, { cause: err });
      }
      await tx.query('INSERT INTO strata.schema_migrations (version, name, checksum) VALUES ($1, $2, $3)', [m.version, m.name, m.checksum]);
      return true;
    });
    if (done) {
      applied.push(m.name);
      log.info('migration applied', { migration: m.name });
    }
  }
  await grantTablespaces(db, tablespaces);
  if (opts.archiveAfter && license !== 'apache') {
    const w = await boundRollupWindow(db, opts.archiveAfter);
    if (w?.changed) log.info('hourly rollup refresh window bounded by the archive age', { from: w.from ?? 'unbounded', to: w.to });
  }

  const info = (
    await db.query<{ v: string; license: string | null }>(
      `SELECT extversion AS v, current_setting('timescaledb.license', true) AS license FROM pg_extension WHERE extname = 'timescaledb'`,
    )
  ).rows[0]!;
  const unavailable = [...unavailableCapabilities(license), ...skipped.map((name) => `migration ${name} (needs the Timescale License)`)];
  if (unavailable.length > 0) log.warn('TimescaleDB is an Apache-only build; these capabilities are unavailable', { unavailable });

  const was = await chunkInterval(db);
  const cmp = (await db.query<{ i: string; same: boolean }>('SELECT $1::interval::text AS i, $1::interval = $2::interval AS same', [opts.chunkInterval, was])).rows[0]!;
  const wanted = cmp.i;
  if (!cmp.same) {
    await db.query(`SELECT set_chunk_time_interval('strata.metrics', $1::interval)`, [opts.chunkInterval]);
    log.info('chunk interval changed; it applies to new chunks only', { from: was, to: wanted });
  }
  return { applied, alreadyApplied: migrations.length - applied.length, timescaledbVersion: info.v, license, unavailable, chunkInterval: { before: was, after: wanted } };
}
