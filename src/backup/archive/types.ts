// Archive to S3 and restore (DESIGN §4).
//
// Glossary
//   archive boundary  chunks whose range ended before it (default 18 months ago) leave the database.
//   export            the chunk's rows read in one REPEATABLE READ snapshot, as CSV (data.csv).
//   package           a tar.gz holding manifest.json and data.csv, built byte-for-byte the same from
//                     the same rows, so a retry after a crash reproduces the same object.
//   object            one S3 object per chunk, at a key fixed by region, hypertable and range.
//   catalog           strata.archive_catalog: one row per chunk, uploading → uploaded → verified →
//                     dropped → expired. Nothing is dropped from the database before `verified`.
//   retain until      archived_at + the retention (7 years); Object Lock holds the object until then
//                     when enabled; `archive expire` deletes it after.
//   restore           for Glacier classes: RestoreObject, then poll x-amz-restore until a temporary
//                     copy is readable; then download, verify and load.

export const STORAGE_CLASSES = ['GLACIER', 'DEEP_ARCHIVE', 'GLACIER_IR', 'STANDARD'] as const;
export type StorageClass = (typeof STORAGE_CLASSES)[number];
/** Classes whose objects must be restored before they can be read. */
export const NEEDS_RESTORE: ReadonlySet<StorageClass> = new Set(['GLACIER', 'DEEP_ARCHIVE']);

export const RESTORE_TIERS = ['Standard', 'Bulk', 'Expedited'] as const;
export type RestoreTier = (typeof RESTORE_TIERS)[number];

export type ObjectLockMode = 'GOVERNANCE' | 'COMPLIANCE';

export type CatalogState = 'uploading' | 'uploaded' | 'verified' | 'dropped' | 'expired';

export interface CatalogEntry {
  id: number;
  hypertable: string;
  region: string;
  rangeStart: Date;
  rangeEnd: Date;
  bucket: string;
  key: string;
  versionId: string | null;
  etag: string | null;
  bytes: number | null;
  rows: number | null;
  rowsPerFacility: Record<string, number>;
  facilityIds: number[];
  sha256: string | null;
  storageClass: StorageClass;
  state: CatalogState;
  archivedAt: Date | null;
  retainUntil: Date | null;
  expiredAt: Date | null;
}

/** What `manifest.json` holds (format 1). */
export interface Manifest {
  format: 1;
  hypertable: string;
  region: string;
  rangeStart: string;
  rangeEnd: string;
  rows: number;
  /** facility id → rows. */
  rowsPerFacility: Record<string, number>;
  minTime: string | null;
  maxTime: string | null;
  data: { file: 'data.csv'; format: 'csv'; header: true; columns: string[]; bytes: number; sha256: string };
  ddl: string;
  versions: { postgresql: string; timescaledb: string; strata: string };
}
