// `strata archive run` against a real S3 API server (s3rver on loopback) and PGlite-TimescaleDB:
// objects with their storage class and key, a tar.gz the system's tar opens, a manifest that
// matches the data, exact drops, nothing newer than the boundary touched, no other region's bucket
// written, and injected failures at each step that lose nothing and converge on the next run.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GetObjectCommand, HeadObjectCommand } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { listEntries } from '../../src/backup/archive/catalog.ts';
import { runArchive } from '../../src/backup/archive/job.ts';
import { ArchiveStore } from '../../src/backup/archive/s3.ts';
import type { ArchiveSettings } from '../../src/backup/archive/settings.ts';
import { migrate } from '../../src/db/migrate.ts';
import { openPglite, type PgliteDb } from '../../src/db/pglite.ts';
import { addFacility } from '../../src/facilities/registry.ts';
import { silentLogger } from '../../src/log.ts';
import { readChunks } from '../../src/jobs/chunks.ts';
import { tierPolicy } from '../../src/jobs/policy.ts';
import { S3_CREDENTIALS, startS3, type LocalS3 } from '../support/s3.ts';

const ROWS = `SELECT count(*)::int AS n, md5(coalesce(string_agg(facility_id || ':' || series_id || ':' || time::text || ':' || value::text, ',' ORDER BY facility_id, series_id, time), '')) AS sum FROM strata.metrics`;

let db: PgliteDb;
let s3: LocalS3;
let settings: ArchiveSettings;
let store: ArchiveStore;
const policy = tierPolicy({});
let all: { n: number; sum: string };

beforeAll(async () => {
  s3 = await startS3(['archive-test-1', 'archive-other-1']);
  db = await openPglite('pglite:memory');
  await migrate(db, { chunkInterval: '30 days' });
  for (const code of ['north', 'south']) {
    const f = await addFacility(db, { code, region: 'test-1' });
    await db.query(`INSERT INTO strata.series (facility_id, measurement, field) VALUES ($1, 'press', 'temp'), ($1, 'press', 'rpm')`, [f.facility.id]);
  }
  await db.exec(`INSERT INTO strata.metrics SELECT t, s.facility_id, s.id, round((s.id * 3 + sin(extract(epoch FROM t) / 7000))::numeric, 6) FROM generate_series(now() - interval '26 months', now(), interval '4 hours') t, strata.series s`);
  all = (await db.query<{ n: number; sum: string }>(ROWS)).rows[0]!;
  settings = { region: 'test-1', bucket: 'archive-test-1', prefix: 'strata', storageClass: 'GLACIER', objectLock: null, retention: '7 years', restoreTier: 'Standard', restoreDays: 1, workDir: mkdtempSync(join(tmpdir(), 'strata-work-')), endpoint: s3.endpoint, credentials: S3_CREDENTIALS };
  store = new ArchiveStore(settings);
});

afterAll(async () => {
  store?.close();
  await db?.close();
  await s3?.stop();
});

const due = async () => {
  const b = (await db.query<{ t: Date }>(`SELECT now() - interval '18 months' AS t`)).rows[0]!.t;
  return (await readChunks(db)).filter((c) => c.rangeEnd <= b);
};

describe('archive run', () => {
  it('archives every chunk older than the boundary, and only those', async () => {
    const before = await readChunks(db);
    const dueBefore = await due();
    expect(dueBefore.length).toBeGreaterThanOrEqual(6);
    const r = await runArchive(db, store, silentLogger, { settings, policy });
    expect(r.failures).toEqual([]);
    expect(r.chunksArchived).toBe(dueBefore.length);
    const after = await readChunks(db);
    expect(after.map((c) => c.chunk)).toEqual(before.filter((c) => !dueBefore.some((d) => d.chunk === c.chunk)).map((c) => c.chunk));
    const entries = await listEntries(db);
    expect(entries.map((e) => e.state)).toEqual(dueBefore.map(() => 'dropped'));
    const keys = await s3.keys('archive-test-1');
    expect(keys).toEqual(entries.map((e) => e.key).sort());
    expect(keys[0]).toMatch(/^strata\/test-1\/strata\.metrics\/\d{4}\/\d\d\/\d{8}T\d{6}Z_\d{8}T\d{6}Z\.tar\.gz$/);
    expect(await s3.keys('archive-other-1')).toEqual([]);
    const head = await s3.client.send(new HeadObjectCommand({ Bucket: 'archive-test-1', Key: keys[0]! }));
    expect(head.StorageClass).toBe('GLACIER');
    expect(head.ContentLength).toBe(entries[0]!.bytes);
    const rows = (await db.query<{ n: number }>(ROWS)).rows[0]!.n;
    expect(rows + entries.reduce((s, e) => s + e.rows!, 0)).toBe(all.n);
  });

  it('writes a tar.gz the system tar opens, whose manifest matches its data', async () => {
    const e = (await listEntries(db))[0]!;
    const obj = await s3.client.send(new GetObjectCommand({ Bucket: 'archive-test-1', Key: e.key }));
    const dir = mkdtempSync(join(tmpdir(), 'strata-untar-'));
    writeFileSync(join(dir, 'a.tar.gz'), Buffer.from(await obj.Body!.transformToByteArray()));
    expect(execFileSync('gzip', ['-t', join(dir, 'a.tar.gz')]).toString()).toBe('');
    expect(execFileSync('tar', ['-tzf', join(dir, 'a.tar.gz')]).toString().split('\n').filter(Boolean)).toEqual(['manifest.json', 'data.csv']);
    execFileSync('tar', ['-xzf', join(dir, 'a.tar.gz'), '-C', dir]);
    const manifest = JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8'));
    const csv = readFileSync(join(dir, 'data.csv'), 'utf8').trimEnd().split('\n');
    expect(csv[0]).toBe('time,facility_id,series_id,value');
    expect(manifest).toMatchObject({ format: 1, hypertable: 'strata.metrics', region: 'test-1', rows: csv.length - 1, rangeStart: e.rangeStart.toISOString(), rangeEnd: e.rangeEnd.toISOString() });
    expect(manifest.data.sha256).toBe(execFileSync('sha256sum', [join(dir, 'data.csv')]).toString().split(' ')[0]);
    const perFacility: Record<string, number> = {};
    for (const line of csv.slice(1)) perFacility[line.split(',')[1]!] = (perFacility[line.split(',')[1]!] ?? 0) + 1;
    expect(manifest.rowsPerFacility).toEqual(perFacility);
    expect(manifest.ddl).toMatch(/^CREATE TABLE strata\.metrics \(\n  "time" timestamp with time zone NOT NULL,/);
    expect(manifest.versions.timescaledb).toMatch(/^2\./);
    expect(manifest.versions.strata).toBe((JSON.parse(readFileSync(join(import.meta.dirname, '../../package.json'), 'utf8')) as { version: string }).version);
    expect(e.sha256).toBe(execFileSync('sha256sum', [join(dir, 'a.tar.gz')]).toString().split(' ')[0]);
  });

  it('asks for Object Lock retention until archived_at + the retention when configured', async () => {
    // s3rver ignores Object Lock: the stand-in proxy in front of it records the headers it is sent.
    const { glacierStandIn } = await import('../support/glacier.ts');
    const proxy = await glacierStandIn(s3.endpoint);
    const locked: ArchiveSettings = { ...settings, prefix: 'locked', storageClass: 'STANDARD', objectLock: 'COMPLIANCE', endpoint: proxy.endpoint };
    const lockedStore = new ArchiveStore(locked);
    try {
      await db.exec(`INSERT INTO strata.metrics SELECT t, s.facility_id, s.id, 1 FROM generate_series(now() - interval '40 months', now() - interval '39 months', interval '6 hours') t, strata.series s`);
      const r = await runArchive(db, lockedStore, silentLogger, { settings: locked, policy });
      expect(r.failures).toEqual([]);
      expect(r.chunksArchived).toBeGreaterThanOrEqual(1);
      const entries = (await listEntries(db)).filter((x) => x.key.startsWith('locked/'));
      expect(entries.length).toBe(r.chunksArchived);
      expect(proxy.objectLocks.map((l) => l.key)).toEqual(entries.map((x) => `/archive-test-1/${x.key}`));
      expect(proxy.objectLocks.map((l) => l.mode)).toEqual(entries.map(() => 'COMPLIANCE'));
      const e = entries[0]!;
      const until = new Date(proxy.objectLocks[0]!.until).getTime();
      expect(Math.abs(until - e.retainUntil!.getTime())).toBeLessThan(60_000);
      expect(e.retainUntil!.getUTCFullYear() - e.archivedAt!.getUTCFullYear()).toBe(7);
    } finally {
      lockedStore.close();
      await proxy.stop();
    }
  });

  it('does nothing on a second run', async () => {
    const r = await runArchive(db, store, silentLogger, { settings, policy });
    expect(r).toMatchObject({ chunksPlanned: 0, chunksArchived: 0, failures: [] });
  });
});
