// Injected failures in `strata archive run`, each losing nothing and converging on the next run:
// S3 going down mid-upload, an object whose bytes differ from what was uploaded (checksum mismatch),
// a crash between the upload and its catalog record, and the process killed (SIGKILL) after each
// step, before the drop. A chunk holding another region's facility is refused, and no other
// region's bucket is ever written.
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PutObjectCommand } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { listEntries } from '../../src/backup/archive/catalog.ts';
import { runArchive } from '../../src/backup/archive/job.ts';
import { ArchiveStore } from '../../src/backup/archive/s3.ts';
import type { ArchiveSettings } from '../../src/backup/archive/settings.ts';
import { migrate } from '../../src/db/migrate.ts';
import { openPglite, type PgliteDb } from '../../src/db/pglite.ts';
import { addFacility } from '../../src/facilities/registry.ts';
import { silentLogger } from '../../src/log.ts';
import { tierPolicy } from '../../src/jobs/policy.ts';
import { strataProcess } from '../support/child.ts';
import { s3Outage, type S3Outage } from '../support/s3-outage.ts';
import { S3_CREDENTIALS, startS3, type LocalS3 } from '../support/s3.ts';

const ROWS = `SELECT count(*)::int AS n, md5(coalesce(string_agg(facility_id || ':' || series_id || ':' || time::text || ':' || value::text, ',' ORDER BY facility_id, series_id, time), '')) AS sum FROM strata.metrics`;
const policy = tierPolicy({});
let s3: LocalS3;
let outage: S3Outage;

beforeAll(async () => {
  s3 = await startS3(['faults-test-1', 'faults-other-1']);
  outage = await s3Outage(s3.endpoint);
});
afterAll(async () => {
  await outage?.stop();
  await s3?.stop();
});

async function database(dir?: string): Promise<PgliteDb> {
  const db = await openPglite(dir ? `pglite:${dir}` : 'pglite:memory');
  await migrate(db, { chunkInterval: '30 days' });
  const f = await addFacility(db, { code: 'mill', region: 'test-1' });
  await db.query(`INSERT INTO strata.series (facility_id, measurement, field) VALUES ($1, 'press', 'temp'), ($1, 'press', 'rpm')`, [f.facility.id]);
  await db.exec(`INSERT INTO strata.metrics SELECT t, s.facility_id, s.id, s.id * 100 + extract(hour FROM t) FROM generate_series(now() - interval '25 months', now() - interval '1 day', interval '5 hours') t, strata.series s`);
  return db;
}

const settingsFor = (endpoint: string, prefix: string): ArchiveSettings => ({
  region: 'test-1', bucket: 'faults-test-1', prefix, storageClass: 'STANDARD', objectLock: null, retention: '7 years', restoreTier: 'Standard', restoreDays: 1,
  workDir: mkdtempSync(join(tmpdir(), 'strata-work-')), endpoint, credentials: S3_CREDENTIALS,
});

/** Every chunk older than the boundary archived once: one object per catalog row, all dropped, every row accounted for. */
async function converged(db: PgliteDb, prefix: string, total: number) {
  const entries = await listEntries(db);
  expect(entries.map((e) => e.state)).toEqual(entries.map(() => 'dropped'));
  expect((await s3.keys('faults-test-1')).filter((k) => k.startsWith(`${prefix}/`))).toEqual(entries.map((e) => e.key).sort());
  const left = (await db.query<{ n: number }>(ROWS)).rows[0]!.n;
  expect(left + entries.reduce((s, e) => s + e.rows!, 0)).toBe(total);
  expect(await s3.keys('faults-other-1')).toEqual([]);
}

describe('archive faults', () => {
  it('S3 down mid-upload: nothing dropped, no object left; the next run archives each chunk once', async () => {
    const db = await database();
    try {
      const total = (await db.query<{ n: number }>(ROWS)).rows[0]!.n;
      const settings = settingsFor(outage.endpoint, 'outage');
      const store = new ArchiveStore(settings);
      outage.down = true;
      const r = await runArchive(db, store, silentLogger, { settings, policy });
      outage.down = false;
      expect(outage.cut).toBeGreaterThan(0);
      expect(r.chunksArchived).toBe(0);
      expect(r.failures.length).toBe(r.chunksPlanned);
      expect(r.failures.every((f) => f.step === 'export-upload')).toBe(true);
      expect((await listEntries(db)).map((e) => e.state)).toEqual(r.failures.map(() => 'uploading'));
      expect((await s3.keys('faults-test-1')).filter((k) => k.startsWith('outage/'))).toEqual([]);
      expect((await db.query(ROWS)).rows[0]).toMatchObject({ n: total });
      const again = await runArchive(db, store, silentLogger, { settings, policy });
      expect(again.failures).toEqual([]);
      await converged(db, 'outage', total);
      store.close();
    } finally {
      await db.close();
    }
  });

  it('an object that does not match its checksum is not trusted: nothing dropped, re-exported and replaced on the next run', async () => {
    const db = await database();
    try {
      const total = (await db.query<{ n: number }>(ROWS)).rows[0]!.n;
      const settings = settingsFor(s3.endpoint, 'mismatch');
      const store = new ArchiveStore(settings);
      let damaged = '';
      const r = await runArchive(db, store, silentLogger, {
        settings, policy, maxChunks: 1,
        afterStep: async (_chunk, step) => {
          if (step !== 'export-upload' || damaged) return;
          damaged = (await listEntries(db))[0]!.key;
          await s3.client.send(new PutObjectCommand({ Bucket: 'faults-test-1', Key: damaged, Body: Buffer.alloc((await listEntries(db))[0]!.bytes!, 7) }));
        },
      });
      expect(r.failures).toEqual([{ chunk: expect.any(String), step: 'verify', error: expect.stringMatching(/incorrect header check|SHA-256/) }]);
      expect((await listEntries(db))[0]!.state).toBe('uploading');
      expect((await db.query(ROWS)).rows[0]).toMatchObject({ n: total });
      const again = await runArchive(db, store, silentLogger, { settings, policy });
      expect(again.failures).toEqual([]);
      await converged(db, 'mismatch', total);
      store.close();
    } finally {
      await db.close();
    }
  });

  it('an object uploaded by a run that crashed before recording it is kept, not uploaded twice', async () => {
    const db = await database();
    try {
      const total = (await db.query<{ n: number }>(ROWS)).rows[0]!.n;
      const settings = settingsFor(s3.endpoint, 'adopt');
      const store = new ArchiveStore(settings);
      await runArchive(db, store, silentLogger, { settings, policy, maxChunks: 1, afterStep: () => { throw new Error('drill: crashed after the upload'); } });
      // The crash happened after the catalog said uploaded; make it the moment before: uploading, object present.
      await db.exec(`UPDATE strata.archive_catalog SET state = 'uploading'`);
      const again = await runArchive(db, store, silentLogger, { settings, policy });
      expect(again.failures).toEqual([]);
      expect(again.bytesUploaded).toBe((await listEntries(db)).slice(1).reduce((s, e) => s + e.bytes!, 0));
      const adopted = await db.query(`SELECT detail->>'adopted' AS a FROM strata.job_journal WHERE job = 'archive' AND step = 'export-upload' AND state = 'done' AND detail ? 'adopted'`);
      expect(adopted.rows).toEqual([{ a: 'true' }]);
      await converged(db, 'adopt', total);
      store.close();
    } finally {
      await db.close();
    }
  });

  it('refuses a chunk holding another region\'s facility and writes it nowhere', async () => {
    const db = await database();
    try {
      const other = await addFacility(db, { code: 'abroad', region: 'other-1' });
      const [series] = (await db.query<{ id: number }>(`INSERT INTO strata.series (facility_id, measurement, field) VALUES ($1, 'press', 'temp') RETURNING id`, [other.facility.id])).rows;
      await db.query(`INSERT INTO strata.metrics VALUES (now() - interval '24 months', $1, $2, 1)`, [other.facility.id, series!.id]);
      const settings = settingsFor(s3.endpoint, 'region');
      const store = new ArchiveStore(settings);
      const r = await runArchive(db, store, silentLogger, { settings, policy });
      expect(r.failures).toEqual([{ chunk: expect.any(String), step: 'export-upload', error: expect.stringMatching(/holds rows of facilities in region other-1; this worker archives region test-1 into faults-test-1 only, so nothing was written/) }]);
      expect(r.chunksArchived).toBe(r.chunksPlanned - 1);
      const failedRange = await db.query(`SELECT count(*)::int AS n FROM strata.metrics WHERE facility_id = $1`, [other.facility.id]);
      expect(failedRange.rows).toEqual([{ n: 1 }]);
      expect((await listEntries(db)).filter((e) => e.state !== 'dropped')).toEqual([]);
      expect(await s3.keys('faults-other-1')).toEqual([]);
      store.close();
    } finally {
      await db.close();
    }
  });
});

describe('strata archive run killed with SIGKILL', () => {
  it('after each step and mid-upload: nothing unverified is dropped, no chunk gets two objects, and the next run converges', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'strata-archive-kill-'));
    const db = await database(dir);
    const total = (await db.query<{ n: number }>(ROWS)).rows[0]!.n;
    await db.close();
    const env = {
      ...process.env, STRATA_ADMIN_DATABASE_URL: `pglite:${dir}`, STRATA_LOG_LEVEL: 'info', STRATA_REGION: 'test-1', STRATA_ARCHIVE_BUCKETS: 'test-1=faults-test-1,other-1=faults-other-1',
      STRATA_ARCHIVE_PREFIX: 'killed', STRATA_S3_ENDPOINT: s3.endpoint, STRATA_ARCHIVE_STORAGE_CLASS: 'STANDARD', AWS_ACCESS_KEY_ID: 'S3RVER', AWS_SECRET_ACCESS_KEY: 'S3RVER',
    };
    const run = (killAt?: RegExp) => strataProcess(['archive', 'run'], env, killAt);
    for (const at of [/: export-upload done in/, /: verify done in/, /"msg":"archive \d+\/\d+ \S+: export-upload"/, /: drop done in/]) {
      const r = await run(at);
      expect(r, r.output).toMatchObject({ killed: true });
      const check = await openPglite(`pglite:${dir}`);
      try {
        // Never a drop before verification: every chunk whose rows are gone is verified-and-dropped.
        const gone = await check.query(`SELECT state FROM strata.archive_catalog c WHERE NOT EXISTS (SELECT 1 FROM strata.metrics m WHERE m.time >= c.range_start AND m.time < c.range_end) AND state <> 'dropped'`);
        expect(gone.rows).toEqual([]);
      } finally {
        await check.close();
      }
    }
    const last = await run();
    expect(last.code, last.output).toBe(0);
    expect(last.output).toMatch(/earlier archive run stopped mid-step|every due chunk was handled/);
    const check = await openPglite(`pglite:${dir}`);
    try {
      await converged(check, 'killed', total);
    } finally {
      await check.close();
    }
    // Five `strata archive run` processes in a row, each starting tsx, PGlite's TimescaleDB (WASM) and
    // the S3 client afresh: ~45 s on an idle 2-core machine, more than twice that under load. Each
    // run ends by itself or at its kill pattern, so the limit only has to be generous.
  }, 300_000);
});
