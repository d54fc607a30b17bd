// A lost lock session is a lost lock. The jobs hold the hypertable's advisory lock on a dedicated
// connection; when that session dies (here: pg_terminate_backend of the backend pg_locks shows
// holding it, as a failover or an operator would end it) the run stops at once: the step in flight
// is journaled failed with "lost the job lock: <reason>", no further step starts, the lock is never
// taken again under the same run id, the command exits non-zero with a clear message, the worker
// logs it and carries on, and the next run converges.
//
// The lock is held on the native PostgreSQL cluster (real backends to terminate); the chunks are
// on PGlite-TimescaleDB (the native cluster has no TimescaleDB), as in the other tiering tests.
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { archiveCommand } from '../../src/backup/archive/command.ts';
import { runArchive } from '../../src/backup/archive/job.ts';
import { ArchiveStore } from '../../src/backup/archive/s3.ts';
import type { ArchiveSettings } from '../../src/backup/archive/settings.ts';
import { loadConfig } from '../../src/config.ts';
import { listEntries } from '../../src/backup/archive/catalog.ts';
import { migrate } from '../../src/db/migrate.ts';
import { openDb } from '../../src/db/open.ts';
import { openPglite, type PgliteDb } from '../../src/db/pglite.ts';
import { addFacility } from '../../src/facilities/registry.ts';
import { connectionLocks, sessionLocks, type JobLock, type LockSource } from '../../src/jobs/lock.ts';
import { readJournal } from '../../src/jobs/journal.ts';
import { createLogger, silentLogger } from '../../src/log.ts';
import { tierCommand } from '../../src/tiering/command.ts';
import { runTiering } from '../../src/tiering/job.ts';
import { tierPolicy } from '../../src/jobs/policy.ts';
import { startWorker } from '../../src/worker.ts';
import { cluster, createDatabase, type TestDatabase } from '../support/databases.ts';
import { S3_CREDENTIALS, startS3, type LocalS3 } from '../support/s3.ts';

const ROWS = `SELECT count(*)::int AS n, md5(coalesce(string_agg(series_id || ':' || time::text || ':' || value::text, ',' ORDER BY time, series_id), '')) AS sum FROM strata.metrics`;
const policy = tierPolicy({});
let t: TestDatabase;

beforeAll(async () => {
  t = await createDatabase(cluster().adminUrl(), 'strata_lock_lost');
});
afterAll(async () => {
  await t?.drop();
});

async function admin<R extends pg.QueryResultRow>(sql: string, params: unknown[] = []): Promise<R[]> {
  const c = new pg.Client({ connectionString: t.url });
  await c.connect();
  try {
    return (await c.query<R>(sql, params)).rows;
  } finally {
    await c.end();
  }
}

/** Backends holding an advisory lock in the test database. */
const lockHolders = () => admin<{ pid: number }>(`SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`);

/** Terminates the backend holding the job lock (found in pg_locks), waiting until it is gone; returns its pid. */
async function killLockSession(): Promise<number> {
  const holders = await lockHolders();
  expect(holders).toHaveLength(1);
  const pid = holders[0]!.pid;
  expect((await admin<{ ok: boolean }>('SELECT pg_terminate_backend($1, 10000) AS ok', [pid]))[0]!.ok).toBe(true);
  return pid;
}

/** The lock on a dedicated connection to the native cluster, remembering each lock it took. */
function recordingLocks(): { source: LockSource; taken: JobLock[] } {
  const inner = connectionLocks(t.url, { heartbeatMs: 500 });
  const taken: JobLock[] = [];
  return {
    taken,
    source: async (h) => {
      const l = await inner(h);
      if (l) taken.push(l);
      return l;
    },
  };
}

const STEP_START = /"msg":"(tiering|archive) \d+\/\d+ \S+: (move → \w+|compress|move-compressed → \w+|recompress|export-upload|verify|drop)"/;

/**
 * A logger that kills the lock session once a log line matches `at` (the `nth` time): `killed`
 * resolves when the backend is gone, with how many lines had been logged by then, so a test can
 * tell the steps that started after the kill from the one in flight.
 */
function killingLogger(at: RegExp, nth = 1) {
  const lines: string[] = [];
  let seen = 0;
  let resolveKilled!: (v: { pid: number; linesBefore: number }) => void;
  const killed = new Promise<{ pid: number; linesBefore: number }>((r) => (resolveKilled = r));
  let started = false;
  const log = createLogger('info', (line) => {
    lines.push(line);
    if (!started && at.test(line) && ++seen === nth) {
      started = true;
      void killLockSession().then((pid) => resolveKilled({ pid, linesBefore: lines.length }));
    }
  });
  return { log, lines, killed, fired: () => started };
}

async function tieringDb(): Promise<{ db: PgliteDb; rows: { n: number; sum: string } }> {
  const db = await openPglite('pglite:memory');
  await db.ensureTablespace('warm_data');
  await db.ensureTablespace('cold_data');
  await migrate(db, { chunkInterval: '30 days' });
  const f = await addFacility(db, { code: 'forge', region: 'test-1' });
  await db.query(`INSERT INTO strata.series (facility_id, measurement, field) VALUES ($1, 'press', 'temp'), ($1, 'press', 'rpm')`, [f.facility.id]);
  await db.exec(`INSERT INTO strata.metrics SELECT t, s.facility_id, s.id, round((s.id * 7 + cos(extract(epoch FROM t) / 9000))::numeric, 5) FROM generate_series(now() - interval '500 days', now(), interval '6 hours') t, strata.series s`);
  return { db, rows: (await db.query<{ n: number; sum: string }>(ROWS)).rows[0]! };
}

describe('the job lock on a dedicated connection', () => {
  it('a terminated lock session aborts the lock at once, fails every check, and is not taken again', async () => {
    const source = connectionLocks(t.url, { heartbeatMs: 0 });
    const lock = (await source('strata.metrics'))!;
    expect(lock).not.toBeNull();
    expect((await lockHolders()).map((h) => h.pid)).toEqual([lock.pid]);
    await lock.verify();
    // Held elsewhere: a second run finds it taken.
    expect(await source('strata.metrics')).toBeNull();
    const aborted = new Promise<unknown>((resolve) => lock.signal.addEventListener('abort', () => resolve(lock.signal.reason), { once: true }));
    expect(await killLockSession()).toBe(lock.pid);
    const reason = await aborted; // from the connection's own error/end event, without any query
    expect(String((reason as Error).message)).toMatch(/^lost the job lock: its connection (failed: terminating connection due to administrator command|closed)/);
    await expect(lock.verify()).rejects.toThrow(/^lost the job lock: /);
    expect(await lockHolders()).toEqual([]); // nothing re-took it
    await lock.release();
    const next = (await source('strata.metrics'))!; // a new run takes it afresh
    expect(next.pid).not.toBe(lock.pid);
    await next.release();
    expect(await lockHolders()).toEqual([]);
  });

  it('on a pool of one, a replaced connection is a lost lock, never a lock taken again on the new one', async () => {
    const db = await openDb(t.url, { max: 1 });
    try {
      const lock = (await sessionLocks(db)('strata.metrics'))!;
      await lock.verify();
      await killLockSession();
      await db.query('SELECT 1').catch(() => {}); // the pool notices and replaces the connection
      await db.query('SELECT 1');
      await expect(lock.verify()).rejects.toThrow(/^lost the job lock: (the connection holding it was replaced|its session failed a check)/);
      expect(await lockHolders()).toEqual([]);
      await lock.release();
    } finally {
      await db.close();
    }
  });
});


describe('tiering with its lock session killed mid-run', () => {
  it('stops at once: the step in flight journaled failed with the reason, no step after it, lock not re-taken; the next run converges', async () => {
    const { db, rows } = await tieringDb();
    try {
      const locks = recordingLocks();
      let steps = 0;
      let killed = 0;
      const r = await runTiering(db, silentLogger, {
        policy, locks: locks.source,
        afterStep: async () => {
          if (++steps === 3) killed = await killLockSession();
        },
      });
      expect(killed).toBe(locks.taken[0]!.pid);
      expect(r).toMatchObject({ stopped: 'lock-lost', stepsDone: 2, stepsFailed: 1, stoppedBy: expect.stringMatching(/terminating connection due to administrator command|closed|failed a check/) });
      expect(r.failures).toEqual([{ chunk: expect.any(String), step: expect.any(String), error: expect.stringMatching(/^lost the job lock: /) }]);
      expect(locks.taken).toHaveLength(1); // never taken again under this run
      const journal = await readJournal(db, { runId: r.runId });
      expect(journal.map((j) => j.state)).toEqual(['done', 'done', 'failed']); // no step started after the kill
      expect(journal[2]!.error).toMatch(/^lost the job lock: /);
      expect(await lockHolders()).toEqual([]);

      const next = await runTiering(db, silentLogger, { policy, locks: connectionLocks(t.url) });
      expect(next).toMatchObject({ stopped: 'done', failures: [], interruptedSteps: 0 }); // nothing was left running
      expect(next.chunksDone).toBe(next.chunksPlanned);
      expect((await db.query(ROWS)).rows[0]).toEqual(rows);
      const again = await runTiering(db, silentLogger, { policy, locks: connectionLocks(t.url) });
      expect(again).toMatchObject({ chunksPlanned: 0, stepsDone: 0, stopped: 'done' });
      expect((await db.query(`SELECT 1 FROM strata.job_journal WHERE state IN ('pending', 'running')`)).rows).toEqual([]);
    } finally {
      await db.close();
    }
    // PGlite-TimescaleDB runs every step in this process: a minute or two when other suites load the machine.
  }, 240_000);

  it('strata tier run: exits 1 with "lost the job lock", no step started after the kill', async () => {
    const { db } = await tieringDb();
    try {
      // Killed as the third step starts (the embedded database runs it while the kill goes out).
      const k = killingLogger(STEP_START, 3);
      const out: string[] = [];
      const config = loadConfig({ env: { STRATA_ADMIN_DATABASE_URL: t.url } });
      const code = await tierCommand(['run'], config, k.log, db, (x) => out.push(x), { locks: connectionLocks(t.url), signal: new AbortController().signal });
      expect(k.fired()).toBe(true);
      const { linesBefore } = await k.killed;
      const text = out.join('\n');
      expect(code, text).toBe(1);
      expect(text).toMatch(/: lost the job lock \(.+\); stopped at once, the next run continues from the catalog/);
      expect(text).toMatch(/failed: \S+ \S+: lost the job lock: /);
      expect(k.lines.slice(linesBefore).filter((l) => STEP_START.test(l))).toEqual([]); // no step started after the kill
      expect(k.lines.some((l) => /"level":"error","msg":"tiering run stopped after step \d+ of \d+: lost the job lock/.test(l))).toBe(true);
      const journal = await readJournal(db, { job: 'tiering' });
      expect(journal.map((j) => j.state)).not.toContain('running');
      expect(journal.length).toBe(k.lines.filter((l) => STEP_START.test(l)).length);
      // The step in flight when the lock went is failed with the reason, or was done before it went.
      expect(journal.slice(0, -1).every((j) => j.state === 'done')).toBe(true);
      if (journal.at(-1)!.state === 'failed') expect(journal.at(-1)!.error).toMatch(/^lost the job lock: /);
    } finally {
      await db.close();
    }
    // PGlite-TimescaleDB runs every step in this process: a minute or two when other suites load the machine.
  }, 240_000);

  it('strata worker: logs the lost lock, keeps its schedule, and its next run converges', async () => {
    const { db, rows } = await tieringDb();
    const k = killingLogger(/: (move → \w+|compress) done in/);
    const { log, lines } = k;
    // A schedule that never fires by itself in the test: runs are started with runNow().
    const w = await startWorker(db, log, { policy, schedule: '0 0 1 1 *', lockTimeoutMs: 1_000, host: '127.0.0.1', port: 0, defaultMetrics: false, locks: connectionLocks(t.url) });
    try {
      const first = await w.runNow();
      await k.killed;
      expect(first.tiering).toMatchObject({ stopped: 'lock-lost' });
      expect(lines.some((l) => /"level":"error","msg":"tiering run \S+ lost the job lock \(.+\); it stopped, and the next scheduled run continues from the catalog"/.test(l))).toBe(true);
      const second = await w.runNow();
      expect(second.tiering).toMatchObject({ stopped: 'done', failures: [] });
      expect((await db.query(ROWS)).rows[0]).toEqual(rows);
      expect((await db.query(`SELECT 1 FROM strata.job_journal WHERE state IN ('pending', 'running')`)).rows).toEqual([]);
      expect((await fetch(`${w.url}/health`)).status).toBe(200);
    } finally {
      await w.stop();
      await db.close();
    }
    // PGlite-TimescaleDB runs every step in this process: a minute or two when other suites load the machine.
  }, 240_000);
});

describe('archive with its lock session killed mid-run', () => {
  let s3: LocalS3;
  beforeAll(async () => {
    s3 = await startS3(['lost-test-1']);
    // archiveCommand's store takes its credentials from the AWS SDK's default chain, as in production.
    process.env.AWS_ACCESS_KEY_ID = S3_CREDENTIALS.accessKeyId;
    process.env.AWS_SECRET_ACCESS_KEY = S3_CREDENTIALS.secretAccessKey;
  });
  afterAll(async () => {
    await s3?.stop();
  });

  async function archiveDb(): Promise<{ db: PgliteDb; total: number }> {
    const db = await openPglite('pglite:memory');
    await migrate(db, { chunkInterval: '30 days' });
    const f = await addFacility(db, { code: 'mill', region: 'test-1' });
    await db.query(`INSERT INTO strata.series (facility_id, measurement, field) VALUES ($1, 'press', 'temp')`, [f.facility.id]);
    await db.exec(`INSERT INTO strata.metrics SELECT t, s.facility_id, s.id, s.id * 100 + extract(hour FROM t) FROM generate_series(now() - interval '25 months', now() - interval '1 day', interval '5 hours') t, strata.series s`);
    return { db, total: (await db.query<{ n: number }>('SELECT count(*)::int AS n FROM strata.metrics')).rows[0]!.n };
  }
  const settings = (prefix: string): ArchiveSettings => ({
    region: 'test-1', bucket: 'lost-test-1', prefix, storageClass: 'STANDARD', objectLock: null, retention: '7 years', restoreTier: 'Standard', restoreDays: 1,
    workDir: mkdtempSync(join(tmpdir(), 'strata-work-')), endpoint: s3.endpoint, credentials: S3_CREDENTIALS,
  });

  it('stops at once, journals the step failed with the reason, drops nothing unverified; the next run converges', async () => {
    const { db, total } = await archiveDb();
    const st = settings('lost');
    const store = new ArchiveStore(st);
    try {
      const locks = recordingLocks();
      let steps = 0;
      const r = await runArchive(db, store, silentLogger, {
        settings: st, policy, locks: locks.source,
        afterStep: async () => {
          if (++steps === 2) await killLockSession(); // after the first chunk's verify, before its drop
        },
      });
      expect(r).toMatchObject({ stopped: 'lock-lost', chunksArchived: 0, stepsRun: 2, stoppedBy: expect.any(String) });
      expect(r.failures).toEqual([{ chunk: expect.any(String), step: 'verify', error: expect.stringMatching(/^lost the job lock: /) }]);
      expect(locks.taken).toHaveLength(1);
      const journal = await readJournal(db, { runId: r.runId });
      expect(journal.map((j) => `${j.step}:${j.state}`)).toEqual(['export-upload:done', 'verify:failed']);
      expect(journal[1]!.error).toMatch(/^lost the job lock: /);
      expect((await db.query<{ n: number }>('SELECT count(*)::int AS n FROM strata.metrics')).rows[0]!.n).toBe(total); // nothing dropped

      const out: string[] = [];
      // The next run, through the command: converges (the verify is redone from the catalog), exit 0.
      const config = loadConfig({ env: { STRATA_ADMIN_DATABASE_URL: t.url, STRATA_REGION: 'test-1', STRATA_ARCHIVE_BUCKETS: 'test-1=lost-test-1', STRATA_ARCHIVE_PREFIX: 'lost', STRATA_S3_ENDPOINT: s3.endpoint, STRATA_ARCHIVE_STORAGE_CLASS: 'STANDARD', STRATA_ARCHIVE_WORK_DIR: st.workDir, AWS_ACCESS_KEY_ID: S3_CREDENTIALS.accessKeyId, AWS_SECRET_ACCESS_KEY: S3_CREDENTIALS.secretAccessKey } });
      const code = await archiveCommand(['run'], config, silentLogger, db, (x) => out.push(x), { locks: connectionLocks(t.url), signal: new AbortController().signal });
      expect(code, out.join('\n')).toBe(0);
      expect(out.join('\n')).toMatch(/every due chunk was handled/);
      const entries = await listEntries(db);
      expect(entries.filter((e) => e.state !== 'dropped')).toEqual([]);
      expect((await s3.keys('lost-test-1')).filter((k) => k.startsWith('lost/'))).toEqual(entries.map((e) => e.key).sort());
      const left = (await db.query<{ n: number }>('SELECT count(*)::int AS n FROM strata.metrics')).rows[0]!.n;
      expect(left + entries.reduce((s, e) => s + Number(e.rows), 0)).toBe(total);
      expect((await db.query(`SELECT 1 FROM strata.job_journal WHERE state IN ('pending', 'running')`)).rows).toEqual([]);
    } finally {
      store.close();
      await db.close();
    }
    // PGlite-TimescaleDB runs every step in this process: a minute or two when other suites load the machine.
  }, 240_000);

  it('strata archive run: lock killed between steps → exit 1 with "lost the job lock", no step after it', async () => {
    const { db } = await archiveDb();
    const st = settings('between');
    const k = killingLogger(/: export-upload done in/);
    try {
      const out: string[] = [];
      const config = loadConfig({ env: { STRATA_ADMIN_DATABASE_URL: t.url, STRATA_REGION: 'test-1', STRATA_ARCHIVE_BUCKETS: 'test-1=lost-test-1', STRATA_ARCHIVE_PREFIX: 'between', STRATA_S3_ENDPOINT: s3.endpoint, STRATA_ARCHIVE_STORAGE_CLASS: 'STANDARD', STRATA_ARCHIVE_WORK_DIR: st.workDir, AWS_ACCESS_KEY_ID: S3_CREDENTIALS.accessKeyId, AWS_SECRET_ACCESS_KEY: S3_CREDENTIALS.secretAccessKey } });
      const code = await archiveCommand(['run'], config, k.log, db, (x) => out.push(x), { locks: connectionLocks(t.url), signal: new AbortController().signal });
      expect(k.fired(), out.join('\n')).toBe(true);
      const { linesBefore } = await k.killed;
      expect(code, out.join('\n')).toBe(1);
      expect(out.join('\n')).toMatch(/lost the job lock \(.+\); stopped at once/);
      expect(k.lines.slice(linesBefore).filter((l) => STEP_START.test(l))).toEqual([]); // no step started after the kill
      const journal = await readJournal(db, { job: 'archive' });
      expect(journal[0]).toMatchObject({ step: 'export-upload', state: 'done' });
      expect(journal.map((j) => j.state)).not.toContain('running');
      expect(journal.length).toBe(k.lines.filter((l) => STEP_START.test(l)).length);
      if (journal.at(-1)!.state === 'failed') expect(journal.at(-1)!.error).toMatch(/^lost the job lock: /);
    } finally {
      await db.close();
    }
    // PGlite-TimescaleDB runs every step in this process: a minute or two when other suites load the machine.
  }, 240_000);
});
