// `strata facility grant|revoke <role> <facility>`: which database roles may read which facilities
// through strata.facility_metrics. A grant is a row in strata.facility_grants, matched against
// current_user, plus membership in strata_reader (the group that may select the view).
import type { Db, Queryable } from '../db/port.ts';
import { StrataError, sqlState } from '../errors.ts';
import { audit } from './audit.ts';

export interface GrantResult {
  role: string;
  facility: string;
  /** False when the grant already existed (grant) or did not exist (revoke). */
  changed: boolean;
}

async function resolve(tx: Queryable, role: string, code: string, verb: string): Promise<number> {
  const r = await tx.query('SELECT 1 FROM pg_roles WHERE rolname = $1', [role]);
  if (r.rows.length === 0) {
    throw new StrataError('no_role', `cannot ${verb}: database role "${role}" does not exist (create it first, e.g. CREATE ROLE "${role}" LOGIN PASSWORD '…')`, { exitCode: 65 });
  }
  const f = await tx.query<{ id: number }>('SELECT id FROM strata.facilities WHERE code = $1', [code]);
  if (!f.rows[0]) throw new StrataError('no_facility', `cannot ${verb}: no facility "${code}" (see strata facility list)`, { exitCode: 65 });
  return f.rows[0].id;
}

function wrap(err: unknown): never {
  if (err instanceof StrataError) throw err;
  if (sqlState(err) === '42P01') throw new StrataError('not_migrated', 'the database has no Strata schema yet: run strata migrate first', { cause: err });
  if (sqlState(err) === '42501') {
    throw new StrataError('grant_privilege', 'the admin connection may not change grants (needs CREATEROLE, or superuser, and membership in strata_maintainer)', { cause: err });
  }
  throw err;
}

export async function grantFacility(db: Db, role: string, code: string): Promise<GrantResult> {
  try {
    return await db.transaction(async (tx) => {
      const id = await resolve(tx, role, code, `grant facility "${code}" to "${role}"`);
      const r = await tx.query('INSERT INTO strata.facility_grants (role_name, facility_id) VALUES ($1, $2) ON CONFLICT DO NOTHING RETURNING 1', [role, id]);
      const member = await tx.query("SELECT pg_has_role($1, 'strata_reader', 'MEMBER') AS m", [role]);
      if (!(member.rows[0] as { m: boolean }).m) {
        const ddl = await tx.query<{ sql: string }>(`SELECT format('GRANT strata_reader TO %I', $1::text) AS sql`, [role]);
        await tx.exec(ddl.rows[0]!.sql);
      }
      if (r.rowCount > 0) await audit(tx, 'facility.grant', code, { role });
      return { role, facility: code, changed: r.rowCount > 0 };
    });
  } catch (err) {
    wrap(err);
  }
}

export async function revokeFacility(db: Db, role: string, code: string): Promise<GrantResult> {
  try {
    return await db.transaction(async (tx) => {
      const id = await resolve(tx, role, code, `revoke facility "${code}" from "${role}"`);
      const r = await tx.query('DELETE FROM strata.facility_grants WHERE role_name = $1 AND facility_id = $2', [role, id]);
      if (r.rowCount > 0) await audit(tx, 'facility.revoke', code, { role });
      return { role, facility: code, changed: r.rowCount > 0 };
    });
  } catch (err) {
    wrap(err);
  }
}

/** Facility codes a role may read. */
export async function grantsOf(db: Db, role: string): Promise<string[]> {
  const r = await db.query<{ code: string }>(
    'SELECT f.code FROM strata.facility_grants g JOIN strata.facilities f ON f.id = g.facility_id WHERE g.role_name = $1 ORDER BY f.code',
    [role],
  );
  return r.rows.map((x) => x.code);
}
