// `strata archive ...` as an operator uses it, on an embedded database and a real S3 API server:
// plan, run, list, expire and lifecycle output; clear errors for bad arguments and missing settings.
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { expireArchive } from '../../src/backup/archive/expire.ts';
import { ArchiveStore } from '../../src/backup/archive/s3.ts';
import { migrate } from '../../src/db/migrate.ts';
import { openPglite } from '../../src/db/pglite.ts';
import { addFacility } from '../../src/facilities/registry.ts';
import { silentLogger } from '../../src/log.ts';
import { strata } from '../support/child.ts';
import { glacierStandIn, type GlacierStandIn } from '../support/glacier.ts';
import { S3_CREDENTIALS, startS3, type LocalS3 } from '../support/s3.ts';

const dir = mkdtempSync(join(tmpdir(), 'strata-archive-cli-'));
let s3: LocalS3;
let glacier: GlacierStandIn;
let env: NodeJS.ProcessEnv;

beforeAll(async () => {
  s3 = await startS3(['cli-test-1']);
  glacier = await glacierStandIn(s3.endpoint);
  // The AWS SDK reads credentials from the process environment (its default chain).
  process.env.AWS_ACCESS_KEY_ID = S3_CREDENTIALS.accessKeyId;
  process.env.AWS_SECRET_ACCESS_KEY = S3_CREDENTIALS.secretAccessKey;
  env = { STRATA_ADMIN_DATABASE_URL: `pglite:${dir}`, STRATA_LOG_LEVEL: 'error', STRATA_REGION: 'test-1', STRATA_ARCHIVE_BUCKETS: 'test-1=cli-test-1', STRATA_S3_ENDPOINT: s3.endpoint, STRATA_ARCHIVE_STORAGE_CLASS: 'STANDARD' };
  const db = await openPglite(`pglite:${dir}`);
  await migrate(db, { chunkInterval: '30 days' });
  const f = await addFacility(db, { code: 'kiln', region: 'test-1' });
  await db.query(`INSERT INTO strata.series (facility_id, measurement, field) VALUES ($1, 'kiln', 'temp')`, [f.facility.id]);
  await db.exec(`INSERT INTO strata.metrics SELECT t, s.facility_id, s.id, 900 FROM generate_series(now() - interval '22 months', now(), interval '12 hours') t, strata.series s`);
  await db.close();
});
afterAll(async () => {
  await glacier?.stop();
  await s3?.stop();
});

describe('strata archive', () => {
  it('plans, runs, lists and finds nothing more to do', async () => {
    const plan = await strata(['archive', 'plan'], env);
    expect(plan).toMatchObject({ code: 0, err: '' });
    expect(plan.out).toMatch(/^archive boundary: \d{4}-\d\d-\d\d \d\d:\d\d/);
    expect(plan.out).toMatch(/not archived +export-upload, verify, drop/);
    expect(plan.out).toMatch(/\n([2-9]|\d\d) chunks to archive \(.+ on disk\), \d+ steps$/);
    const run = await strata(['archive', 'run', '--max-chunks', '1'], env);
    expect(run).toMatchObject({ code: 0 });
    expect(run.out).toMatch(/^archive run \S+ into cli-test-1: stopped at --max-chunks\n1 of \d+ chunks archived, 0 failed; .+ uploaded; \d+ rows left the database/);
    const rest = await strata(['archive', 'run', '--json'], env);
    expect(JSON.parse(rest.out)).toMatchObject({ stopped: 'done', failures: [] });
    const list = await strata(['archive', 'list', '--facility', 'kiln'], env);
    expect(list.out).toMatch(/dropped +STANDARD +\d+ rows .* s3:\/\/cli-test-1\/strata\/test-1\/strata\.metrics\/\d{4}\/\d\d\/\S+ +retained until \d{4}-\d\d-\d\d/);
    expect(list.out).toMatch(/\n([2-9]|\d\d) archived chunks$/);
    const json = JSON.parse((await strata(['archive', 'list', '--json', '--to', '2000-01-01'], env)).out);
    expect(json).toEqual([]);
    expect((await strata(['archive', 'plan', '--json'], env)).out).toMatch(/"steps": 0/);
  });

  it('prints the lifecycle rules, and applies them to the bucket', async () => {
    const printed = JSON.parse((await strata(['archive', 'lifecycle'], { ...env, STRATA_ARCHIVE_STORAGE_CLASS: 'DEEP_ARCHIVE' })).out);
    expect(printed).toEqual({
      Bucket: 'cli-test-1',
      LifecycleConfiguration: {
        Rules: [{ ID: 'strata-archive-test-1', Status: 'Enabled', Filter: { Prefix: 'strata/test-1/' }, Transitions: [{ Days: 0, StorageClass: 'DEEP_ARCHIVE' }], Expiration: { Days: 2562 }, NoncurrentVersionExpiration: { NoncurrentDays: 1 }, AbortIncompleteMultipartUpload: { DaysAfterInitiation: 1 } }],
      },
    });
    // s3rver has no lifecycle API: applied through the stand-in, which keeps what it receives.
    const applied = await strata(['archive', 'lifecycle', '--apply'], { ...env, STRATA_S3_ENDPOINT: glacier.endpoint });
    expect(applied).toMatchObject({ code: 0, out: 'applied lifecycle rule strata-archive-test-1 to s3://cli-test-1/strata/test-1/' });
    const xml = glacier.lifecycle.get('cli-test-1')!;
    expect(xml).toMatch(/<Prefix>strata\/test-1\/<\/Prefix>/);
    expect(xml).toMatch(/<Expiration><Days>2562<\/Days><\/Expiration>/);
    expect(xml).toMatch(/<AbortIncompleteMultipartUpload><DaysAfterInitiation>1<\/DaysAfterInitiation><\/AbortIncompleteMultipartUpload>/);
  });

  it('expires objects past their retention, and only those', async () => {
    const none = await strata(['archive', 'expire', '--dry-run'], env);
    expect(none.out).toBe('0 objects past their retention');
    const db = await openPglite(`pglite:${dir}`);
    const store = new ArchiveStore({ region: 'test-1', bucket: 'cli-test-1', prefix: 'strata', storageClass: 'STANDARD', objectLock: null, retention: '7 years', restoreTier: 'Standard', restoreDays: 1, workDir: tmpdir(), endpoint: s3.endpoint, credentials: S3_CREDENTIALS });
    try {
      const keys = await s3.keys('cli-test-1');
      // The oldest object's retention ends first.
      const first = (await db.query<{ retain_until: Date; object_key: string }>(`SELECT retain_until, object_key FROM strata.archive_catalog ORDER BY range_start LIMIT 1`)).rows[0]!;
      await db.query(`UPDATE strata.archive_catalog SET retain_until = retain_until - interval '1 day' WHERE object_key = $1`, [first.object_key]);
      const r = await expireArchive(db, store, silentLogger, { at: new Date(first.retain_until.getTime() - 3_600_000) });
      expect(r).toEqual({ expired: [{ key: first.object_key, retainUntil: expect.any(Date) }], failures: [] });
      expect(await s3.keys('cli-test-1')).toEqual(keys.filter((k) => k !== first.object_key));
      const states = await db.query(`SELECT state, expired_at IS NOT NULL AS e FROM strata.archive_catalog WHERE object_key = $1`, [first.object_key]);
      expect(states.rows).toEqual([{ state: 'expired', e: true }]);
    } finally {
      store.close();
      await db.close();
    }
    expect((await strata(['archive', 'list'], env)).out).toMatch(/ expired +STANDARD/);
  });

  it('names what is wrong with its arguments and settings', async () => {
    expect(await strata(['archive', 'shelve'], env)).toMatchObject({ code: 64, err: expect.stringContaining('strata archive: unknown subcommand "shelve"') });
    expect(await strata(['archive', 'restore', '--from', '2024-01-01'], env)).toMatchObject({ code: 64, err: expect.stringContaining('--from and --to are required') });
    expect(await strata(['archive', 'restore', '--from', 'last spring', '--to', '2024-01-01'], env)).toMatchObject({ code: 64, err: expect.stringContaining('--from "last spring" is not a timestamp') });
    expect(await strata(['archive', 'restore', '--from', '2024-02-01', '--to', '2024-01-01'], env)).toMatchObject({ code: 64, err: expect.stringMatching(/--from \(2024-02-01T00:00:00.000Z\) must be before --to/) });
    expect(await strata(['archive', 'list', '--facility', 'nowhere'], env)).toMatchObject({ code: 64, err: expect.stringContaining('--facility "nowhere": no such facility') });
    expect(await strata(['archive', 'run', '--max-duration', 'ages'], env)).toMatchObject({ code: 64, err: expect.stringContaining('--max-duration "ages" must be a duration') });
    const { STRATA_ARCHIVE_BUCKETS: _, ...noBuckets } = env;
    expect(await strata(['archive', 'run'], noBuckets)).toMatchObject({ code: 78, err: expect.stringContaining('STRATA_ARCHIVE_BUCKETS: required for the archive') });
    expect(await strata(['archive', 'run'], { ...env, STRATA_ARCHIVE_BUCKETS: 'other-1=elsewhere' })).toMatchObject({ code: 78, err: expect.stringContaining('names no bucket for this region (STRATA_REGION="test-1")') });
    expect(await strata(['archive', 'run'], { ...env, STRATA_ARCHIVE_STORAGE_CLASS: 'ICE' })).toMatchObject({ code: 78, err: expect.stringContaining('STRATA_ARCHIVE_STORAGE_CLASS="ICE"') });
  });
});
