// A facility's life after `strata facility add`: its token rotated (the previous one kept for a grace
// period) or revoked, writes disabled and enabled again, and the facility removed — with its data, or
// retired with its data kept. Every change is one transaction with its audit entry; the table's
// trigger announces it to every gateway on commit (sql/0010_facility_lifecycle.sql).
import type { Db, Queryable } from '../db/port.ts';
import { StrataError, sqlState } from '../errors.ts';
import { audit } from './audit.ts';
import { newToken, tokenHash } from './secrets.ts';

interface Row {
  id: number;
  code: string;
  reader_role: string;
  disabled_at: Date | null;
  retired_at: Date | null;
  token_hash: Buffer | null;
}

/** The facility, locked for the transaction; a clear error when there is none or it was retired. */
async function locked(tx: Queryable, code: string, verb: string, retiredToo = false): Promise<Row> {
  const r = await tx.query<Row>('SELECT id, code, reader_role, disabled_at, retired_at, token_hash FROM strata.facilities WHERE code = $1 FOR UPDATE', [code]);
  const f = r.rows[0];
  if (!f) throw new StrataError('no_facility', `cannot ${verb}: no facility "${code}" (see strata facility list)`, { exitCode: 65 });
  if (f.retired_at && !retiredToo) throw new StrataError('facility_retired', `cannot ${verb}: facility "${code}" was removed on ${f.retired_at.toISOString()} (its rows were kept); it takes no writes`, { exitCode: 65 });
  return f;
}

function wrap(err: unknown, what: string): never {
  if (err instanceof StrataError) throw err;
  if (sqlState(err) === '42P01' || sqlState(err) === '42703') throw new StrataError('not_migrated', 'the database schema is older than this Strata: run strata migrate first', { cause: err });
  if (sqlState(err) === '42501') throw new StrataError('facility_privilege', `cannot ${what}: the admin connection lacks the privilege (needs CREATEROLE, or superuser, and membership in strata_maintainer)`, { cause: err });
  throw err;
}

export interface Rotated {
  code: string;
  /** Shown once; only its hash is stored. */
  token: string;
  /** Until when the previous token is still accepted; null when it stopped at once. */
  previousValidUntil: Date | null;
}

/** A new token; the current one keeps working for `graceMs` (0: stops now). A token still in an earlier grace period stops now. */
export async function rotateToken(db: Db, code: string, graceMs = 0): Promise<Rotated> {
  if (!Number.isFinite(graceMs) || graceMs < 0) throw new StrataError('grace', `the grace period must be 0 or more, not ${graceMs} ms`, { exitCode: 64 });
  const token = newToken();
  try {
    return await db.transaction(async (tx) => {
      const f = await locked(tx, code, `rotate the token of "${code}"`);
      const keep = graceMs > 0 && f.token_hash !== null;
      const r = await tx.query<{ until: Date | null }>(
        `UPDATE strata.facilities
            SET previous_token_hash = CASE WHEN $3 THEN token_hash END,
                previous_token_expires_at = CASE WHEN $3 THEN now() + $4 * interval '1 millisecond' END,
                token_hash = $2
          WHERE id = $1
        RETURNING previous_token_expires_at AS until`,
        [f.id, tokenHash(token), keep, graceMs],
      );
      const until = r.rows[0]!.until;
      await audit(tx, 'token.rotate', code, { graceSeconds: keep ? graceMs / 1000 : 0, previousValidUntil: until?.toISOString() ?? null });
      return { code, token, previousValidUntil: until };
    });
  } catch (err) {
    wrap(err, `rotate the token of "${code}"`);
  }
}

/** No token is accepted for the facility any more (the current one and one in its grace period) until the next rotation. */
export async function revokeToken(db: Db, code: string): Promise<{ changed: boolean }> {
  try {
    return await db.transaction(async (tx) => {
      const f = await locked(tx, code, `revoke the token of "${code}"`);
      const r = await tx.query(
        'UPDATE strata.facilities SET token_hash = NULL, previous_token_hash = NULL, previous_token_expires_at = NULL WHERE id = $1 AND (token_hash IS NOT NULL OR previous_token_hash IS NOT NULL)',
        [f.id],
      );
      if (r.rowCount > 0) await audit(tx, 'token.revoke', code);
      return { changed: r.rowCount > 0 };
    });
  } catch (err) {
    wrap(err, `revoke the token of "${code}"`);
  }
}

/** Refuses (disabled) or accepts again the facility's writes; its token and data are untouched. */
export async function setDisabled(db: Db, code: string, disabled: boolean): Promise<{ changed: boolean }> {
  const verb = `${disabled ? 'disable' : 'enable'} "${code}"`;
  try {
    return await db.transaction(async (tx) => {
      const f = await locked(tx, code, verb);
      if ((f.disabled_at !== null) === disabled) return { changed: false };
      await tx.query(`UPDATE strata.facilities SET disabled_at = ${disabled ? 'now()' : 'NULL'} WHERE id = $1`, [f.id]);
      await audit(tx, disabled ? 'facility.disable' : 'facility.enable', code);
      return { changed: true };
    });
  } catch (err) {
    wrap(err, verb);
  }
}

export interface Removed {
  code: string;
  /** 'deleted': the facility and its rows are gone; 'retired': the rows were kept, the facility takes no writes and has no reader. */
  outcome: 'deleted' | 'retired';
  /** Rows deleted; null when they were kept (retired). */
  rows: number | null;
  series: number;
  readerRole: string;
}

/**
 * Removes a facility: its tokens, grants and reader role always. With no data it is deleted; with data
 * it is refused unless `keepData` (the facility is retired: rows kept for maintainers and the archive,
 * the code stays taken) or `deleteData` (its rows and series are deleted too).
 */
export async function removeFacility(db: Db, code: string, o: { keepData?: boolean; deleteData?: boolean } = {}): Promise<Removed> {
  if (o.keepData && o.deleteData) throw new StrataError('remove_options', 'choose one of --keep-data and --delete-data', { exitCode: 64 });
  try {
    return await db.transaction(async (tx) => {
      const f = await locked(tx, code, `remove "${code}"`, true);
      const series = Number((await tx.query<{ n: number }>('SELECT count(*)::int AS n FROM strata.series WHERE facility_id = $1', [f.id])).rows[0]!.n);
      // Whether rows exist, not how many: counting a facility's months of rows is a scan of them all.
      const hasRows = (await tx.query<{ e: boolean }>('SELECT EXISTS (SELECT 1 FROM strata.metrics WHERE facility_id = $1) AS e', [f.id])).rows[0]!.e;
      const hasData = series > 0 || hasRows;
      if (hasData && !o.keepData && !o.deleteData) {
        throw new StrataError(
          'facility_has_data',
          `facility "${code}" still has data (${series.toLocaleString('en-US')} series${hasRows ? ' with rows' : ', no rows'}): rerun with --keep-data to retire it with its rows kept (no token, no reader, no writes), or with --delete-data to delete its rows too (archived chunks in S3 are not touched)`,
          { exitCode: 65 },
        );
      }
      // The reader role goes whatever happens to the rows. Privileges granted to it (or objects it
      // created) in this database go first; elsewhere in the cluster they would make DROP ROLE fail, and say where.
      const role = await tx.query<{ owns: boolean; owned: string; drop: string }>(
        `SELECT EXISTS (SELECT 1 FROM pg_shdepend d WHERE d.refclassid = 'pg_authid'::regclass AND d.refobjid = r.oid AND d.dbid = (SELECT oid FROM pg_database WHERE datname = current_database())) AS owns,
                format('DROP OWNED BY %I', r.rolname) AS owned, format('DROP ROLE %I', r.rolname) AS drop
           FROM pg_roles r WHERE r.rolname = $1`,
        [f.reader_role],
      );
      if (role.rows[0]) {
        if (role.rows[0].owns) await tx.exec(role.rows[0].owned);
        await tx.exec(role.rows[0].drop);
      }
      await tx.query('DELETE FROM strata.facility_grants WHERE facility_id = $1', [f.id]);
      let outcome: Removed['outcome'];
      let rows: number | null = null;
      if (hasData && o.keepData) {
        await tx.query(
          'UPDATE strata.facilities SET token_hash = NULL, previous_token_hash = NULL, previous_token_expires_at = NULL, disabled_at = coalesce(disabled_at, now()), retired_at = coalesce(retired_at, now()) WHERE id = $1',
          [f.id],
        );
        outcome = 'retired';
      } else {
        rows = (await tx.query('DELETE FROM strata.metrics WHERE facility_id = $1', [f.id])).rowCount;
        await tx.query('DELETE FROM strata.series WHERE facility_id = $1', [f.id]);
        await tx.query('DELETE FROM strata.facilities WHERE id = $1', [f.id]);
        outcome = 'deleted';
      }
      await audit(tx, 'facility.remove', code, { outcome, rows, series, readerRole: f.reader_role });
      return { code, outcome, rows, series, readerRole: f.reader_role };
    });
  } catch (err) {
    wrap(err, `remove "${code}"`);
  }
}
