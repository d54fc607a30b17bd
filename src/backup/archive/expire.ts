// Retention: `strata archive expire` deletes objects whose retention ended (archived_at + 7 years by
// default) and marks their catalog rows expired; `strata archive lifecycle` gives the equivalent S3
// lifecycle rules for the region's prefix, so the bucket enforces the same even if no worker runs.
import type { LifecycleRule } from '@aws-sdk/client-s3';
import type { Db } from '../../db/port.ts';
import { errorText } from '../../errors.ts';
import type { Logger } from '../../log.ts';
import { AGE } from '../../config.ts';
import { setState } from './catalog.ts';
import { regionPrefix } from './keys.ts';
import type { ArchiveStore } from './s3.ts';
import type { ArchiveSettings } from './settings.ts';

export interface ExpireSummary {
  expired: { key: string; retainUntil: Date }[];
  failures: { key: string; error: string }[];
}

/** Deletes the objects of dropped chunks whose retention ended by `at` (default now). */
export async function expireArchive(db: Db, store: ArchiveStore, log: Logger, o: { at?: Date; dryRun?: boolean } = {}): Promise<ExpireSummary> {
  const r = await db.query<{ id: number; object_key: string; version_id: string | null; retain_until: Date }>(
    `SELECT id, object_key, version_id, retain_until FROM strata.archive_catalog
      WHERE state = 'dropped' AND bucket = $1 AND retain_until <= coalesce($2::timestamptz, now()) ORDER BY retain_until`,
    [store.bucket, o.at ?? null],
  );
  const out: ExpireSummary = { expired: [], failures: [] };
  for (const e of r.rows) {
    try {
      if (!o.dryRun) {
        await store.delete(e.object_key, e.version_id);
        await setState(db, Number(e.id), 'expired');
        log.info(`expired ${e.object_key} (retained until ${e.retain_until.toISOString()})`);
      }
      out.expired.push({ key: e.object_key, retainUntil: e.retain_until });
    } catch (err) {
      out.failures.push({ key: e.object_key, error: errorText(err) });
      log.error(`cannot expire ${e.object_key}`, { error: err });
    }
  }
  return out;
}

/** The retention as whole days, rounded up (a year is 366 days, a month 31: never earlier than the catalog's date). */
export function retentionDays(retention: string): number {
  const m = AGE.exec(retention);
  if (!m) throw new RangeError(`retention "${retention}" must be a whole number of days, weeks, months or years`);
  const n = Number(m[1]);
  const unit = m[2]!.toLowerCase();
  return unit.startsWith('day') ? n : unit.startsWith('week') ? 7 * n : unit.startsWith('month') ? 31 * n : 366 * n;
}

export function lifecycleRules(s: ArchiveSettings): LifecycleRule[] {
  return [
    {
      ID: `strata-archive-${s.region}`,
      Status: 'Enabled',
      Filter: { Prefix: regionPrefix(s.prefix, s.region) },
      ...(s.storageClass === 'STANDARD' ? {} : { Transitions: [{ Days: 0, StorageClass: s.storageClass }] }),
      Expiration: { Days: retentionDays(s.retention) },
      NoncurrentVersionExpiration: { NoncurrentDays: 1 },
      AbortIncompleteMultipartUpload: { DaysAfterInitiation: 1 },
    },
  ];
}
