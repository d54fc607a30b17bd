// Facility registry: `strata facility add` and `strata facility list` (the rest of a facility's life: lifecycle.ts).
// A facility gets an ingest token (stored as its SHA-256) and a login role for its readers,
// member of strata_reader and granted the facility in strata.facility_grants.
import { z } from 'zod';
import { StrataError, sqlState } from '../errors.ts';
import type { Db } from '../db/port.ts';
import { audit } from './audit.ts';
import { newPassword, newToken, scramVerifier, tokenHash } from './secrets.ts';
import { FACILITY_CODE, REGION } from '../patterns.ts';

export const facilityInput = z.object({
  code: z
    .string()
    .regex(FACILITY_CODE, 'must be 1–48 lowercase letters, digits, "_" or "-", starting with a letter or digit'),
  region: z.string().regex(REGION, 'must be lowercase letters, digits and hyphens, such as "eu-west-1"'),
  name: z.string().trim().min(1, 'must not be empty').max(200, 'must be at most 200 characters').optional(),
});
export type FacilityInput = z.infer<typeof facilityInput>;

export interface Facility {
  id: number;
  code: string;
  region: string;
  name: string | null;
  readerRole: string;
  createdAt: Date;
  seriesCount: number;
  /** 'active', 'disabled' (writes refused), 'retired' (removed, rows kept), or 'no token' (revoked, not rotated since). */
  state: 'active' | 'disabled' | 'retired' | 'no token';
  /** Until when the token replaced by the last rotation is still accepted. */
  previousTokenValidUntil: Date | null;
}

export interface NewFacility {
  facility: Facility;
  /** Shown once; only its hash is stored. */
  token: string;
  /** Shown once; stored by PostgreSQL as a SCRAM verifier. */
  readerPassword: string;
}

export function readerRoleName(code: string): string {
  return `strata_reader_${code.replace(/-/g, '_')}`;
}

function parseInput(input: FacilityInput): FacilityInput {
  const r = facilityInput.safeParse(input);
  if (r.success) return r.data;
  const problems = r.error.issues.map((i) => `${String(i.path[0])} ${JSON.stringify((input as Record<string, unknown>)[String(i.path[0])])}: ${i.message}`);
  throw new StrataError('facility_input', `cannot add facility: ${problems.join('; ')}`, { exitCode: 65 });
}

export async function addFacility(db: Db, input: FacilityInput): Promise<NewFacility> {
  const { code, region, name } = parseInput(input);
  const role = readerRoleName(code);
  const token = newToken();
  const readerPassword = newPassword();
  const verifier = scramVerifier(readerPassword);
  try {
    const id = await db.transaction(async (tx) => {
      const dup = await tx.query<{ id: number }>('SELECT id FROM strata.facilities WHERE code = $1', [code]);
      if (dup.rows[0]) throw new StrataError('facility_exists', `facility "${code}" already exists (id ${dup.rows[0].id})`, { exitCode: 65 });
      const sameRole = await tx.query<{ code: string }>('SELECT code FROM strata.facilities WHERE reader_role = $1', [role]);
      if (sameRole.rows[0]) {
        throw new StrataError('role_exists', `facility code "${code}" maps to reader role "${role}", which facility "${sameRole.rows[0].code}" already has; choose another code`, { exitCode: 65 });
      }
      const roleTaken = await tx.query('SELECT 1 FROM pg_roles WHERE rolname = $1', [role]);
      if (roleTaken.rows.length > 0) {
        throw new StrataError(
          'role_exists',
          `database role "${role}" already exists (another facility's reader role in this cluster, or a leftover); drop it or choose another code`,
          { exitCode: 65 },
        );
      }
      // Identifiers cannot be bound as parameters: format() quotes them, and the verifier is a literal.
      const ddl = await tx.query<{ sql: string }>(`SELECT format('CREATE ROLE %I LOGIN PASSWORD %L IN ROLE strata_reader', $1::text, $2::text) AS sql`, [role, verifier]);
      await tx.exec(ddl.rows[0]!.sql);
      const ins = await tx.query<{ id: number }>(
        'INSERT INTO strata.facilities (code, region, name, token_hash, reader_role) VALUES ($1, $2, $3, $4, $5) RETURNING id',
        [code, region, name ?? null, tokenHash(token), role],
      );
      const facilityId = ins.rows[0]!.id;
      await tx.query('INSERT INTO strata.facility_grants (role_name, facility_id) VALUES ($1, $2)', [role, facilityId]);
      await audit(tx, 'facility.add', code, { id: facilityId, region, readerRole: role });
      return facilityId;
    });
    const facility = (await listFacilities(db)).find((f) => f.id === id)!;
    return { facility, token, readerPassword };
  } catch (err) {
    if (err instanceof StrataError) throw err;
    if (sqlState(err) === '42501') {
      throw new StrataError('facility_privilege', `cannot add facility "${code}": the admin connection may not create roles (needs CREATEROLE or superuser)`, { cause: err });
    }
    if (sqlState(err) === '42P01') throw new StrataError('not_migrated', 'the database has no Strata schema yet: run strata migrate first', { cause: err });
    throw err;
  }
}

export async function listFacilities(db: Db): Promise<Facility[]> {
  try {
    const r = await db.query<{ id: number; code: string; region: string; name: string | null; reader_role: string; created_at: Date; series_count: number; state: Facility['state']; previous: Date | null }>(
      `SELECT f.id, f.code, f.region, f.name, f.reader_role, f.created_at,
              (SELECT count(*) FROM strata.series s WHERE s.facility_id = f.id)::int AS series_count,
              CASE WHEN f.retired_at IS NOT NULL THEN 'retired' WHEN f.disabled_at IS NOT NULL THEN 'disabled' WHEN f.token_hash IS NULL THEN 'no token' ELSE 'active' END AS state,
              CASE WHEN f.previous_token_expires_at > now() THEN f.previous_token_expires_at END AS previous
         FROM strata.facilities f ORDER BY f.code`,
    );
    return r.rows.map((x) => ({
      id: x.id, code: x.code, region: x.region, name: x.name, readerRole: x.reader_role, createdAt: x.created_at, seriesCount: x.series_count, state: x.state, previousTokenValidUntil: x.previous,
    }));
  } catch (err) {
    if (sqlState(err) === '42P01') throw new StrataError('not_migrated', 'the database has no Strata schema yet: run strata migrate first', { cause: err });
    throw err;
  }
}
