// `strata archive restore` round trips: archived chunks come back with exactly their rows (checksum
// over the rows), for a full range into a side table and for one facility and part of a range into
// the hypertable. Glacier objects go through RestoreObject and x-amz-restore polling (a stand-in
// proxy in front of s3rver, which does not implement restores), with --wait or by running again.
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PutObjectCommand } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { listEntries } from '../../src/backup/archive/catalog.ts';
import { runArchive } from '../../src/backup/archive/job.ts';
import { restoreArchive } from '../../src/backup/archive/restore.ts';
import { ArchiveStore } from '../../src/backup/archive/s3.ts';
import type { ArchiveSettings } from '../../src/backup/archive/settings.ts';
import { migrate } from '../../src/db/migrate.ts';
import { openPglite, type PgliteDb } from '../../src/db/pglite.ts';
import { addFacility } from '../../src/facilities/registry.ts';
import { silentLogger } from '../../src/log.ts';
import { tierPolicy } from '../../src/jobs/policy.ts';
import { glacierStandIn, type GlacierStandIn } from '../support/glacier.ts';
import { S3_CREDENTIALS, startS3, type LocalS3 } from '../support/s3.ts';

const sum = (table: string, where: string) =>
  `SELECT count(*)::int AS n, md5(coalesce(string_agg(facility_id || ':' || series_id || ':' || time::text || ':' || value::text, ',' ORDER BY facility_id, series_id, time), '')) AS sum FROM ${table} WHERE ${where}`;

let db: PgliteDb;
let s3: LocalS3;
let glacier: GlacierStandIn;
let settings: ArchiveSettings;
let archiveStore: ArchiveStore;
let restoreStore: ArchiveStore;
let north: number;
let from: Date;
let to: Date;
let before: { all: { n: number; sum: string }; north: { n: number; sum: string } };

const rowsOf = async (table: string, where: string, params: unknown[] = []) => (await db.query<{ n: number; sum: string }>(sum(table, where), params)).rows[0]!;

beforeAll(async () => {
  s3 = await startS3(['restore-test-1']);
  glacier = await glacierStandIn(s3.endpoint, { headsToComplete: 2 });
  db = await openPglite('pglite:memory');
  await migrate(db, { chunkInterval: '30 days' });
  for (const code of ['north', 'south']) {
    const f = await addFacility(db, { code, region: 'test-1' });
    if (code === 'north') north = f.facility.id;
    await db.query(`INSERT INTO strata.series (facility_id, measurement, field) VALUES ($1, 'press', 'temp'), ($1, 'press', 'rpm')`, [f.facility.id]);
  }
  // The rows, kept aside as they were, to compare what comes back with.
  await db.exec(`CREATE TABLE expected AS SELECT t AS time, s.facility_id, s.id AS series_id, round((s.id * 5 + cos(extract(epoch FROM t) / 5000))::numeric, 6)::float8 AS value FROM generate_series(now() - interval '24 months', now(), interval '3 hours') t, strata.series s`);
  await db.exec(`INSERT INTO strata.metrics SELECT time, facility_id, series_id, value FROM expected`);
  settings = { region: 'test-1', bucket: 'restore-test-1', prefix: 'archive', storageClass: 'GLACIER', objectLock: null, retention: '7 years', restoreTier: 'Bulk', restoreDays: 2, workDir: mkdtempSync(join(tmpdir(), 'strata-work-')), endpoint: s3.endpoint, credentials: S3_CREDENTIALS };
  archiveStore = new ArchiveStore(settings);
  restoreStore = new ArchiveStore({ ...settings, endpoint: glacier.endpoint });
  const r = await runArchive(db, archiveStore, silentLogger, { settings, policy: tierPolicy({}) });
  expect(r.failures).toEqual([]);
  const entries = await listEntries(db);
  from = entries[0]!.rangeStart;
  to = entries.at(-1)!.rangeEnd;
  expect(entries.length).toBeGreaterThanOrEqual(5);
  before = {
    all: await rowsOf('expected', `time >= $1 AND time < $2`, [from, to]),
    north: await rowsOf('expected', `time >= $1 AND time < $2 AND facility_id = $3`, [from, new Date((from.getTime() + to.getTime()) / 2), north]),
  };
  expect(before.all.n).toBe(entries.reduce((s, e) => s + e.rows!, 0));
});

afterAll(async () => {
  archiveStore?.close();
  restoreStore?.close();
  await db?.close();
  await glacier?.stop();
  await s3?.stop();
});

describe('archive restore', () => {
  it('requests Glacier restores, reports them pending, and loads once they are ready on a later run', async () => {
    const opts = { settings, from, to, into: 'restored.full' };
    await db.exec('CREATE SCHEMA IF NOT EXISTS restored');
    const first = await restoreArchive(db, restoreStore, silentLogger, opts);
    expect(first.loaded).toEqual([]);
    expect(first.pending.map((p) => p.state)).toEqual(first.pending.map(() => 'requested'));
    expect(first.pending.length).toBe(first.chunks);
    expect(glacier.restores.length).toBe(first.chunks);
    expect(glacier.restores[0]!.body).toMatch(/<Days>2<\/Days>.*<Tier>Bulk<\/Tier>/s);
    const second = await restoreArchive(db, restoreStore, silentLogger, opts);
    expect(second.pending.map((p) => p.state)).toEqual(second.pending.map(() => 'in-progress'));
    expect(glacier.restores.length).toBe(first.chunks); // not requested twice
    const third = await restoreArchive(db, restoreStore, silentLogger, opts);
    expect(third).toMatchObject({ pending: [], failures: [] });
    expect(third.loaded.length).toBe(first.chunks);
    expect(await rowsOf('restored.full', 'true')).toEqual(before.all);
  });

  it('restores one facility\'s rows of part of the range into the hypertable, waiting for Glacier', async () => {
    const mid = new Date((from.getTime() + to.getTime()) / 2);
    const r = await restoreArchive(db, restoreStore, silentLogger, { settings, from, to: mid, facilityId: north, wait: true, pollMs: 10 });
    expect(r).toMatchObject({ pending: [], failures: [] });
    expect(await rowsOf('strata.metrics', `time >= $1 AND time < $2`, [from, mid])).toEqual(before.north);
    const again = await restoreArchive(db, restoreStore, silentLogger, { settings, from, to: mid, facilityId: north, wait: true, pollMs: 10 });
    expect(again.loaded).toEqual([]);
    expect(again.failures[0]!.error).toMatch(/^strata\.metrics already holds \d+ rows in \[.*\) of facility \d+; restored before\?/);
    expect(await rowsOf('strata.metrics', `time >= $1 AND time < $2`, [from, mid])).toEqual(before.north);
  });

  it('refuses an object whose bytes differ from the archived ones, and loads nothing from it', async () => {
    const e = (await listEntries(db)).at(-1)!;
    const body = Buffer.from('not the archive');
    await s3.client.send(new PutObjectCommand({ Bucket: settings.bucket, Key: e.key, Body: body, StorageClass: 'STANDARD' }));
    const r = await restoreArchive(db, restoreStore, silentLogger, { settings, from: e.rangeStart, to: e.rangeEnd, into: 'restored.tampered' });
    expect(r.loaded).toEqual([]);
    expect(r.failures).toEqual([{ key: e.key, error: expect.stringMatching(/incorrect header check|SHA-256|not a strata manifest|no manifest/) }]);
    expect((await rowsOf('restored.tampered', 'true')).n).toBe(0);
  });

  it('names a bad range or table', async () => {
    await expect(restoreArchive(db, restoreStore, silentLogger, { settings, from: to, to: from })).rejects.toThrow(/--from \(.*\) must be before --to/);
    await expect(restoreArchive(db, restoreStore, silentLogger, { settings, from, to, into: 'Robert; DROP TABLE x' })).rejects.toThrow(/--into "Robert; DROP TABLE x" must be a lowercase table name/);
  });
});
