// The hourly rollup outlives the raw rows the archive takes: its refresh policy never reaches back
// past the archive age, so archiving, refreshing, restoring and refreshing again leave the archived
// range's buckets exactly as they were, while a late row inside the window still reaches the rollup.
// On PGlite-TimescaleDB with s3rver; "refresh" is the policy's own job, run at once with run_job.
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { listEntries } from '../../src/backup/archive/catalog.ts';
import { runArchive } from '../../src/backup/archive/job.ts';
import { restoreArchive } from '../../src/backup/archive/restore.ts';
import { ArchiveStore } from '../../src/backup/archive/s3.ts';
import type { ArchiveSettings } from '../../src/backup/archive/settings.ts';
import { migrate } from '../../src/db/migrate.ts';
import { boundRollupWindow } from '../../src/db/rollup-window.ts';
import { StrataError } from '../../src/errors.ts';
import { openPglite, type PgliteDb } from '../../src/db/pglite.ts';
import { addFacility } from '../../src/facilities/registry.ts';
import { silentLogger } from '../../src/log.ts';
import { tierPolicy } from '../../src/jobs/policy.ts';
import { S3_CREDENTIALS, startS3, type LocalS3 } from '../support/s3.ts';

let db: PgliteDb;
let s3: LocalS3;
let settings: ArchiveSettings;
let store: ArchiveStore;

const policy = async () =>
  (await db.query<{ job_id: number; start: string | null }>(`SELECT job_id, config->>'start_offset' AS start FROM timescaledb_information.jobs WHERE proc_name = 'policy_refresh_continuous_aggregate' AND hypertable_name = 'metrics_hourly'`)).rows[0]!;
/** The policy's own refresh, now. */
const refresh = async () => db.exec(`CALL run_job(${(await policy()).job_id})`);
/** Every bucket of a range, summed up. */
const buckets = async (from: Date, to: Date) =>
  (
    await db.query<{ n: number; samples: number; sum: string }>(
      `SELECT count(*)::int AS n, coalesce(sum(samples), 0)::int AS samples,
              md5(coalesce(string_agg(bucket::text || ':' || facility_id || ':' || series_id || ':' || samples || ':' || sum || ':' || min || ':' || max, ',' ORDER BY bucket, facility_id, series_id), '')) AS sum
         FROM strata.metrics_hourly WHERE bucket >= $1 AND bucket < $2`,
      [from, to],
    )
  ).rows[0]!;

beforeAll(async () => {
  s3 = await startS3(['rollup-test-1']);
  db = await openPglite('pglite:memory');
  await migrate(db, { chunkInterval: '30 days', archiveAfter: '18 months' });
  const f = await addFacility(db, { code: 'north', region: 'test-1' });
  await db.query(`INSERT INTO strata.series (facility_id, measurement, field) VALUES ($1, 'press', 'temp'), ($1, 'press', 'rpm')`, [f.facility.id]);
  await db.exec(`INSERT INTO strata.metrics SELECT t, s.facility_id, s.id, s.id * 10 + extract(hour FROM t) FROM generate_series(now() - interval '24 months', now() - interval '2 hours', interval '3 hours') t, strata.series s`);
  settings = { region: 'test-1', bucket: 'rollup-test-1', prefix: 'archive', storageClass: 'STANDARD', objectLock: null, retention: '7 years', restoreTier: 'Standard', restoreDays: 1, workDir: mkdtempSync(join(tmpdir(), 'strata-work-')), endpoint: s3.endpoint, credentials: S3_CREDENTIALS };
  store = new ArchiveStore(settings);
});

afterAll(async () => {
  store?.close();
  await db?.close();
  await s3?.stop();
});

describe('the hourly rollup and the archive', () => {
  it('bounds the refresh policy by the archive age; a shorter window is kept, a longer one bounded again', async () => {
    expect((await policy()).start).toBe('1 year 6 mons');
    await db.query(`SELECT alter_job(job_id, config => jsonb_set(config, '{start_offset}', 'null'::jsonb)) FROM timescaledb_information.jobs WHERE job_id = $1`, [(await policy()).job_id]);
    await migrate(db, { chunkInterval: '30 days', archiveAfter: '18 months' });
    expect((await policy()).start).toBe('1 year 6 mons');
    await migrate(db, { chunkInterval: '30 days', archiveAfter: '2 years' });
    expect((await policy()).start).toBe('1 year 6 mons');
    await migrate(db, { chunkInterval: '30 days', archiveAfter: '12 months' });
    expect((await policy()).start).toBe('1 year');
    await migrate(db, { chunkInterval: '30 days', archiveAfter: '18 months' });
    expect((await policy()).start).toBe('1 year');
  });

  it('says what to run when the window cannot be bounded (not the job’s owner), and changes nothing', async () => {
    const err = await db
      .transaction(async (tx) => {
        await tx.exec('SET LOCAL ROLE strata_maintainer');
        await boundRollupWindow(tx, '6 months');
      })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StrataError);
    expect((err as StrataError).code).toBe('rollup_window');
    expect((err as Error).message).toMatch(/^the hourly rollup's refresh policy \(job \d+\) reaches back 1 year, past the archive age of 6 mons, and bounding it failed \(.+\); .*run strata migrate with the same STRATA_ARCHIVE_AFTER, or: SELECT alter_job\(\d+, config => jsonb_set\(config, '\{start_offset\}', to_jsonb\('6 mons'::text\)\)\)/);
    expect((await policy()).start).toBe('1 year');
  });

  it('keeps the archived range’s buckets through archive, refresh, restore and refresh; a late row in the window still counts', async () => {
    // The history was aggregated while it was young.
    await db.exec(`CALL refresh_continuous_aggregate('strata.metrics_hourly', NULL, now() - interval '1 hour')`);
    // As if the policy had been widened by hand (or the archive age shortened without a migrate):
    // the archive bounds it again before its first drop.
    await db.query(`SELECT alter_job(job_id, config => jsonb_set(config, '{start_offset}', 'null'::jsonb)) FROM timescaledb_information.jobs WHERE job_id = $1`, [(await policy()).job_id]);
    const r = await runArchive(db, store, silentLogger, { settings, policy: tierPolicy({}) });
    expect(r.failures).toEqual([]);
    expect((await policy()).start).toBe('1 year 6 mons');
    const entries = await listEntries(db);
    expect(entries.length).toBeGreaterThanOrEqual(4);
    const from = entries[0]!.rangeStart;
    const to = entries.at(-1)!.rangeEnd;
    const archived = await buckets(from, to);
    expect(archived.n).toBeGreaterThan(1_000);
    expect((await db.query<{ n: number }>('SELECT count(*)::int AS n FROM strata.metrics WHERE time < $1', [to])).rows[0]!.n).toBe(0);

    const lateAt = (await db.query<{ t: Date }>(`SELECT date_trunc('hour', now() - interval '2 months') + interval '1 minute' AS t`)).rows[0]!.t;
    const hour = new Date(lateAt.getTime() - 60_000);
    const lateBefore = await buckets(hour, new Date(hour.getTime() + 3_600_000));
    await db.query(`INSERT INTO strata.metrics SELECT $1::timestamptz, facility_id, id, 1 FROM strata.series`, [lateAt]);

    await refresh();
    expect(await buckets(from, to)).toEqual(archived);
    expect((await buckets(hour, new Date(hour.getTime() + 3_600_000))).samples).toBe(lateBefore.samples + 2);

    const back = await restoreArchive(db, store, silentLogger, { settings, from, to });
    expect(back).toMatchObject({ pending: [], failures: [] });
    expect(back.rows).toBe(archived.samples);
    await refresh();
    expect(await buckets(from, to)).toEqual(archived);
  });
});
