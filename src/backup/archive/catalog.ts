// strata.archive_catalog: one row per archived chunk. The row is written before the upload starts
// (state uploading), so an interrupted upload is visible; it moves to uploaded, verified, dropped
// (the chunk left the database in the same transaction) and finally expired.
import type { Queryable } from '../../db/port.ts';
import type { CatalogEntry, CatalogState, StorageClass } from './types.ts';

const COLUMNS = `id, hypertable, region, range_start, range_end, bucket, object_key, version_id, etag, bytes, row_count,
  rows_per_facility, facility_ids, sha256, s3_checksum, storage_class, state, archived_at, retain_until, expired_at`;

export interface Entry extends CatalogEntry {
  s3Checksum: string | null;
}

function toEntry(r: Record<string, unknown>): Entry {
  return {
    id: Number(r.id),
    hypertable: r.hypertable as string,
    region: r.region as string,
    rangeStart: r.range_start as Date,
    rangeEnd: r.range_end as Date,
    bucket: r.bucket as string,
    key: r.object_key as string,
    versionId: (r.version_id as string | null) ?? null,
    etag: (r.etag as string | null) ?? null,
    bytes: r.bytes === null ? null : Number(r.bytes),
    rows: r.row_count === null ? null : Number(r.row_count),
    rowsPerFacility: (r.rows_per_facility as Record<string, number>) ?? {},
    facilityIds: (r.facility_ids as number[]) ?? [],
    sha256: (r.sha256 as string | null) ?? null,
    s3Checksum: (r.s3_checksum as string | null) ?? null,
    storageClass: r.storage_class as StorageClass,
    state: r.state as CatalogState,
    archivedAt: (r.archived_at as Date | null) ?? null,
    retainUntil: (r.retain_until as Date | null) ?? null,
    expiredAt: (r.expired_at as Date | null) ?? null,
  };
}

export async function entryFor(db: Queryable, hypertable: string, rangeStart: Date, rangeEnd: Date): Promise<Entry | null> {
  const r = await db.query(`SELECT ${COLUMNS} FROM strata.archive_catalog WHERE hypertable = $1 AND range_start = $2 AND range_end = $3`, [hypertable, rangeStart, rangeEnd]);
  return r.rows[0] ? toEntry(r.rows[0]) : null;
}

/** The row for an export about to be uploaded (created, or reset to uploading with the new export's figures). */
export async function recordUploading(
  db: Queryable,
  e: { hypertable: string; region: string; rangeStart: Date; rangeEnd: Date; bucket: string; key: string; bytes: number; rows: number; rowsPerFacility: Record<string, number>; sha256: string; s3Checksum: string; storageClass: StorageClass },
): Promise<Entry> {
  const r = await db.query(
    `INSERT INTO strata.archive_catalog (hypertable, region, range_start, range_end, bucket, object_key, bytes, row_count, rows_per_facility, facility_ids, sha256, s3_checksum, storage_class, state)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb, $10::int[], $11, $12, $13, 'uploading')
     ON CONFLICT (hypertable, range_start, range_end) DO UPDATE SET
       region = EXCLUDED.region, bucket = EXCLUDED.bucket, object_key = EXCLUDED.object_key, bytes = EXCLUDED.bytes, row_count = EXCLUDED.row_count,
       rows_per_facility = EXCLUDED.rows_per_facility, facility_ids = EXCLUDED.facility_ids, sha256 = EXCLUDED.sha256, s3_checksum = EXCLUDED.s3_checksum,
       storage_class = EXCLUDED.storage_class, state = 'uploading', version_id = NULL, etag = NULL, archived_at = NULL, retain_until = NULL
     RETURNING ${COLUMNS}`,
    [e.hypertable, e.region, e.rangeStart, e.rangeEnd, e.bucket, e.key, e.bytes, e.rows, JSON.stringify(e.rowsPerFacility), Object.keys(e.rowsPerFacility).map(Number), e.sha256, e.s3Checksum, e.storageClass],
  );
  return toEntry(r.rows[0]!);
}

export async function recordUploaded(db: Queryable, id: number, u: { versionId: string | null; etag: string | null; retention: string }): Promise<Entry> {
  const r = await db.query(
    `UPDATE strata.archive_catalog SET state = 'uploaded', version_id = $2, etag = $3, archived_at = now(), retain_until = now() + $4::interval WHERE id = $1 RETURNING ${COLUMNS}`,
    [id, u.versionId, u.etag, u.retention],
  );
  return toEntry(r.rows[0]!);
}

export async function setState(db: Queryable, id: number, state: CatalogState): Promise<Entry> {
  const r = await db.query(
    `UPDATE strata.archive_catalog SET state = $2, expired_at = CASE WHEN $2 = 'expired' THEN now() ELSE expired_at END WHERE id = $1 RETURNING ${COLUMNS}`,
    [id, state],
  );
  return toEntry(r.rows[0]!);
}

export interface ListFilter {
  hypertable?: string;
  from?: Date;
  to?: Date;
  facilityId?: number;
  states?: CatalogState[];
}

/** Entries overlapping [from, to), holding rows of the facility when given, oldest first. */
export async function listEntries(db: Queryable, f: ListFilter = {}): Promise<Entry[]> {
  const r = await db.query(
    `SELECT ${COLUMNS} FROM strata.archive_catalog
      WHERE ($1::text IS NULL OR hypertable = $1) AND ($2::timestamptz IS NULL OR range_end > $2) AND ($3::timestamptz IS NULL OR range_start < $3)
        AND ($4::int IS NULL OR $4 = ANY (facility_ids)) AND ($5::text[] IS NULL OR state = ANY ($5))
      ORDER BY range_start, id`,
    [f.hypertable ?? null, f.from ?? null, f.to ?? null, f.facilityId ?? null, f.states ?? null],
  );
  return r.rows.map(toEntry);
}
