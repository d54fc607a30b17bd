// `strata archive restore --from --to [--facility] [--into]`: the way back. For each archived chunk
// overlapping the range (holding the facility's rows, when one is named):
//   Glacier classes  RestoreObject (tier and days configurable), then x-amz-restore is polled until
//                    the temporary copy is ready (--wait), or the command reports what is pending and
//                    a later run picks up where it left off (S3 remembers the request);
//   then             download, check the object's SHA-256 against the catalog and the data against
//                    its manifest, and load the rows within [from, to) (of the facility) into the
//                    hypertable or a side table, in one transaction, recorded in the journal.
// Loading into a table that already holds rows of that range (and facility) is refused: the rows
// would be there twice.
import { randomUUID } from 'node:crypto';
import { createReadStream, mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Db } from '../../db/port.ts';
import { errorText } from '../../errors.ts';
import { Journal } from '../../jobs/journal.ts';
import type { Logger } from '../../log.ts';
import { HYPERTABLE } from '../../jobs/chunks.ts';
import { listEntries, type Entry } from './catalog.ts';
import { COLUMNS } from './export.ts';
import type { ArchiveMetrics } from './metrics.ts';
import { readPackage } from './package.ts';
import { restoreState, type ArchiveStore } from './s3.ts';
import type { ArchiveSettings } from './settings.ts';
import { NEEDS_RESTORE } from './types.ts';
import { QUALIFIED_IDENTIFIER } from '../../patterns.ts';

export interface RestoreOptions {
  settings: ArchiveSettings;
  from: Date;
  to: Date;
  /** A facility id: only its rows are loaded. */
  facilityId?: number;
  /** A table to load into instead of the hypertable (created like it when missing). */
  into?: string;
  /** Poll until every Glacier restore is ready (else report what is pending and return). */
  wait?: boolean;
  pollMs?: number;
  /** Give up waiting after this long (default: no limit). */
  maxWaitMs?: number;
  metrics?: ArchiveMetrics;
}

export interface RestoreSummary {
  chunks: number;
  loaded: { key: string; rows: number }[];
  pending: { key: string; state: 'requested' | 'in-progress' }[];
  failures: { key: string; error: string }[];
  rows: number;
}

export async function restoreArchive(db: Db, store: ArchiveStore, log: Logger, o: RestoreOptions): Promise<RestoreSummary> {
  if (!(o.from < o.to)) throw new RangeError(`--from (${o.from.toISOString()}) must be before --to (${o.to.toISOString()})`);
  if (o.into && !QUALIFIED_IDENTIFIER.test(o.into)) throw new RangeError(`--into "${o.into}" must be a lowercase table name, optionally schema-qualified (such as restored.metrics_2024)`);
  const target = o.into ?? HYPERTABLE;
  const entries = (await listEntries(db, { hypertable: HYPERTABLE, from: o.from, to: o.to, ...(o.facilityId !== undefined ? { facilityId: o.facilityId } : {}), states: ['uploaded', 'verified', 'dropped'] })).filter(
    (e) => e.bucket === store.bucket,
  );
  const summary: RestoreSummary = { chunks: entries.length, loaded: [], pending: [], failures: [], rows: 0 };
  const journal = new Journal(db, 'restore', randomUUID(), HYPERTABLE);
  if (o.into) await db.exec(`CREATE TABLE IF NOT EXISTS ${o.into} (LIKE ${HYPERTABLE} INCLUDING DEFAULTS)`);
  const deadline = o.maxWaitMs === undefined ? Infinity : Date.now() + o.maxWaitMs;

  let waiting = entries;
  for (let round = 0; waiting.length > 0; round++) {
    const next: Entry[] = [];
    for (const e of waiting) {
      try {
        const ready = await readiness(e);
        if (ready === true) await load(e);
        else {
          next.push(e);
          if (round === 0 || !o.wait) summary.pending.push({ key: e.key, state: ready });
        }
      } catch (err) {
        summary.failures.push({ key: e.key, error: errorText(err) });
        o.metrics?.failures.inc({ step: 'restore' });
        log.error(`restore ${e.key} failed`, { error: err });
      }
    }
    if (!o.wait || next.length === 0) break;
    if (Date.now() >= deadline) {
      log.warn('stopped waiting for Glacier restores; run the same command again to continue', { pending: next.length });
      break;
    }
    log.info(`waiting for ${next.length} Glacier restore(s) to complete`, { keys: next.map((e) => e.key) });
    await sleep(o.pollMs ?? 60_000);
    waiting = next;
    summary.pending = summary.pending.filter((p) => next.some((e) => e.key === p.key));
  }
  if (o.wait) summary.pending = summary.pending.filter((p) => !summary.loaded.some((l) => l.key === p.key));
  return summary;

  /** true when the object can be read; else the state of its restore (requested now, or under way). */
  async function readiness(e: Entry): Promise<true | 'requested' | 'in-progress'> {
    if (!NEEDS_RESTORE.has(e.storageClass)) return true;
    const head = await store.head(e.key);
    if (!head) throw new Error(`${e.key} is not in bucket ${store.bucket}`);
    if (!NEEDS_RESTORE.has(head.storageClass)) return true;
    const state = restoreState(head);
    if (state === 'ready') return true;
    if (state === 'in-progress') return 'in-progress';
    try {
      await store.requestRestore(e.key, e.versionId, o.settings.restoreDays, o.settings.restoreTier);
    } catch (err) {
      // An S3-compatible server without Glacier (strata dev's local one): its objects read at once.
      if ((err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode === 501) {
        log.warn(`the S3 server does not implement RestoreObject; reading ${e.key} directly`);
        return true;
      }
      throw err;
    }
    o.metrics?.restoreRequests.inc();
    log.info(`requested a ${o.settings.restoreTier} restore of ${e.key} for ${o.settings.restoreDays} days`);
    return 'requested';
  }

  async function load(e: Entry): Promise<void> {
    const id = await journal.pending(e.key, 'restore', { into: target, from: o.from, to: o.to, facilityId: o.facilityId ?? null });
    await journal.running(id);
    const work = mkdtempSync(join(o.settings.workDir, 'strata-restore-'));
    try {
      const data = join(work, 'data.csv');
      const got = await readPackage(await store.download(e.key, e.versionId), data, e.key);
      if (got.objectSha256 !== e.sha256) throw new Error(`${e.key}: SHA-256 ${got.objectSha256} differs from the catalog's ${e.sha256}`);
      if (got.manifest.rows !== e.rows) throw new Error(`${e.key}: the manifest lists ${got.manifest.rows} rows; the catalog ${e.rows}`);
      const from = new Date(Math.max(o.from.getTime(), e.rangeStart.getTime()));
      const to = new Date(Math.min(o.to.getTime(), e.rangeEnd.getTime()));
      const rows = await db.transaction(async (tx) => {
        const facility = o.facilityId === undefined ? '' : ` AND facility_id = ${Number(o.facilityId)}`;
        const present = await tx.query<{ n: number | string }>(`SELECT count(*) AS n FROM ${target} WHERE time >= $1 AND time < $2${facility}`, [from, to]);
        if (Number(present.rows[0]!.n) > 0) throw new Error(`${target} already holds ${present.rows[0]!.n} rows in [${from.toISOString()}, ${to.toISOString()})${facility ? ` of facility ${o.facilityId}` : ''}; restored before? (use --into <table> to load a second copy elsewhere)`);
        await tx.exec(`CREATE TEMP TABLE strata_restore (LIKE ${HYPERTABLE}) ON COMMIT DROP; SET LOCAL timezone = 'UTC'`);
        const copied = await tx.copyIn(`COPY strata_restore (${COLUMNS.join(', ')}) FROM STDIN (FORMAT csv, HEADER)`, createReadStream(data));
        if (copied !== got.manifest.rows) throw new Error(`${e.key}: loaded ${copied} rows; the manifest lists ${got.manifest.rows}`);
        const r = await tx.query(`INSERT INTO ${target} (${COLUMNS.join(', ')}) SELECT ${COLUMNS.join(', ')} FROM strata_restore WHERE time >= $1 AND time < $2${facility}`, [from, to]);
        return r.rowCount;
      });
      summary.loaded.push({ key: e.key, rows });
      summary.rows += rows;
      await journal.finish(id, 'done', undefined, { rows });
      log.info(`restored ${rows} rows from ${e.key} into ${target}`);
    } catch (err) {
      await journal.finish(id, 'failed', errorText(err)).catch(() => {});
      throw err;
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
  }
}
