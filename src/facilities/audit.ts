// The audit trail of admin actions (strata.audit_log): who (the database role, and the operating-
// system user the command ran as), what, on which facility, when. Written in the transaction of the
// action itself, so an action that did not commit leaves no entry and one that did always has one.
import { userInfo } from 'node:os';
import type { Db, Queryable } from '../db/port.ts';
import { StrataError, sqlState } from '../errors.ts';

export type AuditAction = 'facility.add' | 'facility.grant' | 'facility.revoke' | 'token.rotate' | 'token.revoke' | 'facility.disable' | 'facility.enable' | 'facility.remove';

export interface AuditEntry {
  id: number;
  at: Date;
  dbRole: string;
  osUser: string | null;
  action: string;
  facility: string | null;
  details: Record<string, unknown>;
}

/** The operating-system user this process runs as, or null where the platform cannot tell. */
function osUser(): string | null {
  try {
    return userInfo().username;
  } catch {
    return null;
  }
}

/** Records an action inside the caller's transaction. */
export async function audit(tx: Queryable, action: AuditAction, facility: string | null, details: Record<string, unknown> = {}): Promise<void> {
  await tx.query('INSERT INTO strata.audit_log (os_user, action, facility, details) VALUES ($1, $2, $3, $4::jsonb)', [osUser(), action, facility, JSON.stringify(details)]);
}

/** Entries since `since` (all without), oldest first. */
export async function listAudit(db: Db, o: { since?: Date; facility?: string } = {}): Promise<AuditEntry[]> {
  try {
    const r = await db.query<{ id: number; at: Date; db_role: string; os_user: string | null; action: string; facility: string | null; details: Record<string, unknown> }>(
      `SELECT id, at, db_role, os_user, action, facility, details FROM strata.audit_log
        WHERE ($1::timestamptz IS NULL OR at >= $1) AND ($2::text IS NULL OR facility = $2) ORDER BY id`,
      [o.since ?? null, o.facility ?? null],
    );
    return r.rows.map((x) => ({ id: x.id, at: x.at, dbRole: x.db_role, osUser: x.os_user, action: x.action, facility: x.facility, details: x.details }));
  } catch (err) {
    if (sqlState(err) === '42P01') throw new StrataError('not_migrated', 'the database has no audit log yet: run strata migrate first', { cause: err });
    if (sqlState(err) === '42501') throw new StrataError('audit_privilege', 'the connection may not read strata.audit_log (it needs membership in strata_maintainer)', { cause: err, exitCode: 77 });
    throw err;
  }
}
