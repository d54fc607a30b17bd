// The tiering job's locking on native PostgreSQL (two sessions, which PGlite cannot have): a second
// worker finds the hypertable's lock held and leaves; a step that cannot get its table lock gives
// up within lock_timeout, so writes are not queued behind it, and tries again after a backoff.
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runArchive } from '../../src/backup/archive/job.ts';
import { ArchiveStore } from '../../src/backup/archive/s3.ts';
import { openDb } from '../../src/db/open.ts';
import type { Db } from '../../src/db/port.ts';
import { silentLogger } from '../../src/log.ts';
import { runTiering } from '../../src/tiering/job.ts';
import { tryLock, unlock } from '../../src/jobs/lock.ts';
import { withLockTimeout } from '../../src/tiering/lock-timeout.ts';
import { createTierMetrics } from '../../src/tiering/metrics.ts';
import { tierPolicy } from '../../src/jobs/policy.ts';
import { cluster, createDatabase, type TestDatabase } from '../support/databases.ts';

let t: TestDatabase;
let worker: Db;
let other: Db;
let writer: Db;

beforeAll(async () => {
  t = await createDatabase(cluster().adminUrl(), 'strata_locks');
  [worker, other, writer] = await Promise.all([openDb(t.url, { max: 1 }), openDb(t.url, { max: 1 }), openDb(t.url, { max: 1 })]);
  await worker.exec('CREATE TABLE readings (t timestamptz, v float8)');
});
afterAll(async () => {
  await Promise.all([worker, other, writer].map((d) => d?.close()));
  await t?.drop();
});

describe('the hypertable lock', () => {
  it('a second worker finds it held, does nothing and records no success', async () => {
    expect(await tryLock(other, 'strata.metrics')).toBe(true);
    try {
      const registry = new Registry();
      const metrics = createTierMetrics(registry);
      const r = await runTiering(worker, silentLogger, { policy: tierPolicy({}), metrics });
      expect(r).toMatchObject({ stopped: 'locked', chunksPlanned: 0, stepsDone: 0 });
      expect(await registry.getSingleMetricAsString('strata_tier_last_success_timestamp_seconds')).toMatch(/seconds 0$/);
      // The archive job shares the lock: it leaves too, before touching the bucket.
      const store = new ArchiveStore({ region: 'test-1', bucket: 'never-used', prefix: 'p', storageClass: 'STANDARD', objectLock: null, retention: '7 years', restoreTier: 'Standard', restoreDays: 1, workDir: '/nonexistent', endpoint: 'http://127.0.0.1:9' });
      try {
        const a = await runArchive(worker, store, silentLogger, { settings: store.settings, policy: tierPolicy({}) });
        expect(a).toMatchObject({ stopped: 'locked', chunksPlanned: 0, bytesUploaded: 0 });
      } finally {
        store.close();
      }
      // Each hypertable has its own lock.
      expect(await tryLock(worker, 'strata.other_metrics')).toBe(true);
      await unlock(worker, 'strata.other_metrics');
    } finally {
      await unlock(other, 'strata.metrics');
    }
    expect(await tryLock(worker, 'strata.metrics')).toBe(true);
    await unlock(worker, 'strata.metrics');
  });
});

describe('a step under lock_timeout', () => {
  it('gives up within the timeout while a writer holds the table, so later writes do not queue behind it, and succeeds on a later attempt', async () => {
    const events: string[] = [];
    // An ingest transaction holds the table (ROW EXCLUSIVE) for a while.
    await other.exec('BEGIN');
    await other.exec(`INSERT INTO readings VALUES (now(), 1)`);
    const attempts: number[] = [];
    const step = withLockTimeout(worker, { timeoutMs: 150, backoffMs: 400, attempts: 10, onAttempt: async (a) => void attempts.push(a) }, async () => {
      await worker.exec('ALTER TABLE readings ADD COLUMN IF NOT EXISTS note text'); // needs ACCESS EXCLUSIVE
      events.push('step done');
    });
    // A second write arrives while the step waits for its lock; without lock_timeout it would wait
    // behind the step until the first writer commits.
    await new Promise((r) => setTimeout(r, 50));
    const second = writer.exec(`INSERT INTO readings VALUES (now(), 2)`).then(() => void events.push('second write committed'));
    await new Promise((r) => setTimeout(r, 1_000));
    events.push('first writer commits');
    await other.exec('COMMIT');
    await Promise.all([step, second]);
    expect(events).toEqual(['second write committed', 'first writer commits', 'step done']);
    expect(attempts.length).toBeGreaterThanOrEqual(2);
    expect(attempts).toEqual(attempts.map((_, i) => i + 1));
    expect((await worker.query<{ lock_timeout: string }>('SHOW lock_timeout')).rows[0]!.lock_timeout).toBe('0');
  });

  it('fails with the lock error after its last attempt, and resets lock_timeout', async () => {
    await other.exec('BEGIN');
    await other.exec('LOCK TABLE readings IN ACCESS SHARE MODE');
    const attempts: number[] = [];
    try {
      const step = withLockTimeout(worker, { timeoutMs: 100, backoffMs: 10, attempts: 3, onAttempt: async (a) => void attempts.push(a) }, () => worker.exec('ALTER TABLE readings ADD COLUMN IF NOT EXISTS flag boolean'));
      await expect(step).rejects.toMatchObject({ code: '55P03', message: expect.stringContaining('lock timeout') });
    } finally {
      await other.exec('COMMIT');
    }
    expect(attempts).toEqual([1, 2, 3]);
    expect((await worker.query<{ lock_timeout: string }>('SHOW lock_timeout')).rows[0]!.lock_timeout).toBe('0');
  });

  it('does not retry an error other than a lock timeout', async () => {
    const attempts: number[] = [];
    const step = withLockTimeout(worker, { timeoutMs: 100, backoffMs: 10, onAttempt: async (a) => void attempts.push(a) }, () => worker.exec('ALTER TABLE no_such_table ADD COLUMN x int'));
    await expect(step).rejects.toMatchObject({ code: '42P01' });
    expect(attempts).toEqual([1]);
  });
});
