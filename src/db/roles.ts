// Strata's cluster-wide roles (sql/0001_roles.sql creates the same when missing). Roles belong to
// the cluster, not a database, and the migration lock is per database: two Strata databases
// migrating at once on one cluster can both find a role missing and both create it, and the second
// CREATE ROLE fails on pg_authid's unique index. Creating them here first, retrying on that
// collision, leaves 0001 nothing to create.
import { StrataError, errorText, sqlState } from '../errors.ts';
import type { Db } from './port.ts';
import { IDENTIFIER } from '../patterns.ts';

export const STRATA_ROLES = ['strata_maintainer', 'strata_ingest', 'strata_reader'] as const;

/** 23505 (unique_violation on pg_authid) or 42710 (duplicate_object): another session made the role first. */
const RACED = new Set(['23505', '42710']);

/** Creates each NOLOGIN role that is missing; a role another session creates meanwhile is taken as created. */
export async function ensureRoles(db: Db, roles: readonly string[] = STRATA_ROLES, attempts = 5): Promise<void> {
  for (const role of roles) {
    if (!IDENTIFIER.test(role)) throw new StrataError('role_name', `invalid role name ${JSON.stringify(role)}`);
    for (let attempt = 1; ; attempt++) {
      const have = await db.query('SELECT 1 FROM pg_roles WHERE rolname = $1', [role]);
      if (have.rows.length > 0) break;
      try {
        await db.exec(`CREATE ROLE ${role} NOLOGIN`);
        break;
      } catch (err) {
        const state = sqlState(err);
        if (state && RACED.has(state) && attempt < attempts) continue;
        throw new StrataError('role_create', `cannot create database role ${role}: ${errorText(err)}${state ? ` (SQLSTATE ${state})` : ''}`, { cause: err });
      }
    }
  }
}
