// SIGTERM (and SIGINT) stop `strata tier run`, `strata worker` and `strata archive run` after the
// current step, as an orchestrator stopping a pod or an operator's Ctrl-C would: exit 0 within about
// one step's time, long before the run would have ended, nothing left `running` in the journal, and
// the next run converges. Runs the CLI as child processes on an embedded TimescaleDB directory with
// many small chunks (hundreds of steps), like kill.test.ts.
import { spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { listEntries } from '../../src/backup/archive/catalog.ts';
import { migrate } from '../../src/db/migrate.ts';
import { openPglite, type PgliteDb } from '../../src/db/pglite.ts';
import { addFacility } from '../../src/facilities/registry.ts';
import { strataProcess } from '../support/child.ts';
import { S3_CREDENTIALS, startS3, type LocalS3 } from '../support/s3.ts';

const BIN = join(import.meta.dirname, '../../bin/strata.js');
const CHECKSUM = `SELECT count(*)::int AS n, md5(coalesce(string_agg(series_id || ':' || time::text || ':' || value::text, ',' ORDER BY time, series_id), '')) AS sum FROM strata.metrics`;

interface Stopped {
  code: number | null;
  signal: NodeJS.Signals | null;
  output: string;
  /** ms from the signal to the exit. */
  afterSignalMs: number | null;
}

/**
 * `strata <args>` as a child process; once its output matches `at`, `signal` is sent (once). Resolves
 * at its exit. A child that has not exited `limitMs` after the signal is killed (a hang fails the
 * test with its output instead of a vitest timeout).
 */
function signalAt(args: string[], env: NodeJS.ProcessEnv, at: RegExp, signal: NodeJS.Signals = 'SIGTERM', o: { then?: NodeJS.Signals; limitMs?: number } = {}): Promise<Stopped> {
  const child = spawn(process.execPath, [BIN, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  let sentAt: number | null = null;
  let guard: NodeJS.Timeout | undefined;
  const watch = (d: Buffer) => {
    output += d.toString();
    if (sentAt === null && at.test(output)) {
      sentAt = Date.now();
      output += `\n--- test: ${signal} sent ---\n`;
      child.kill(signal);
      // A different second signal (two of the same kind may be delivered as one).
      if (o.then) setTimeout(() => child.kill(o.then), 20);
      guard = setTimeout(() => child.kill('SIGKILL'), o.limitMs ?? 120_000);
    }
  };
  child.stdout.on('data', watch);
  child.stderr.on('data', watch);
  return new Promise((resolve) =>
    child.once('exit', (code, sig) => {
      clearTimeout(guard);
      resolve({ code, signal: sig, output, afterSignalMs: sentAt === null ? null : Date.now() - sentAt });
    }),
  );
}

async function withDb<T>(dir: string, fn: (db: PgliteDb) => Promise<T>): Promise<T> {
  const db = await openPglite(`pglite:${dir}`);
  try {
    return await fn(db);
  } finally {
    await db.close();
  }
}

/** Steps the log says were done, by their "… done in" lines. */
const doneSteps = (output: string) => (output.match(/ done in [\d.]+ s/g) ?? []).length;

describe('SIGTERM stops the tiering jobs after the current step', () => {
  const dir = mkdtempSync(join(tmpdir(), 'strata-tier-stop-'));
  const env = { ...process.env, STRATA_ADMIN_DATABASE_URL: `pglite:${dir}`, STRATA_LOG_LEVEL: 'info' };
  let expected: { n: number; sum: string };

  beforeAll(async () => {
    expected = await withDb(dir, async (db) => {
      await db.ensureTablespace('warm_data');
      await db.ensureTablespace('cold_data');
      // Day-long chunks over ~170 days past the warm boundary: ~340 steps (a move and a compress each).
      await migrate(db, { chunkInterval: '1 day' });
      const f = await addFacility(db, { code: 'press', region: 'test-1' });
      await db.query(`INSERT INTO strata.series (facility_id, measurement, field) VALUES ($1, 'press', 'temp')`, [f.facility.id]);
      await db.exec(`INSERT INTO strata.metrics SELECT t, s.facility_id, s.id, round((20 + cos(extract(epoch FROM t) / 9000))::numeric, 4) FROM generate_series(now() - interval '200 days', now(), interval '8 hours') t, strata.series s`);
      return (await db.query<{ n: number; sum: string }>(CHECKSUM)).rows[0]!;
    });
  });

  async function journal() {
    return withDb(dir, async (db) => {
      const open = (await db.query(`SELECT run_id, chunk, step, state FROM strata.job_journal WHERE state IN ('pending', 'running')`)).rows;
      const runs = (await db.query<{ run_id: string; done: number; failed: number }>(
        `SELECT run_id, count(*) FILTER (WHERE state = 'done')::int AS done, count(*) FILTER (WHERE state = 'failed')::int AS failed FROM strata.job_journal WHERE job = 'tiering' GROUP BY run_id ORDER BY min(id)`,
      )).rows;
      return { open, runs };
    });
  }

  it('strata tier run: exits 0 after the step in progress, far from the end, journal consistent; the next run continues', async () => {
    // The third step done: the run is well under way; it has hundreds to go.
    const r = await signalAt(['tier', 'run'], env, /(: (move → \w+|compress) done in [\s\S]*){3}/);
    expect(r, r.output).toMatchObject({ code: 0, signal: null });
    const m = /stopped by SIGTERM after step (\d+) of (\d+)/.exec(r.output);
    expect(m, r.output).not.toBeNull();
    const [after, of] = [Number(m![1]), Number(m![2])];
    expect(of).toBeGreaterThan(300);
    expect(after).toBeLessThan(10); // the step in flight at most, not the rest of the run
    expect(after).toBe(doneSteps(r.output));
    expect(r.output).toMatch(/"msg":"SIGTERM received; the tiering run stops after its current step/);
    // About one step's time (a step here takes well under a second; the margin is for a loaded machine).
    expect(r.afterSignalMs!).toBeLessThan(20_000);
    const j = await journal();
    expect(j.open).toEqual([]);
    expect(j.runs).toEqual([{ run_id: expect.any(String), done: after, failed: 0 }]);
  }, 300_000);

  it('SIGINT does the same; a second signal exits at once', async () => {
    const r = await signalAt(['tier', 'run'], env, /: (move → \w+|compress) done in/, 'SIGINT');
    expect(r, r.output).toMatchObject({ code: 0 });
    expect(r.output).toMatch(/stopped by SIGINT after step \d+ of \d+/);
    expect((await journal()).open).toEqual([]);
    // SIGINT as the next step starts, SIGTERM right behind it: the operator who will not wait.
    const forced = await signalAt(['tier', 'run'], env, /"msg":"tiering \d+\/\d+ \S+: (move → \w+|compress)"/, 'SIGINT', { then: 'SIGTERM' });
    expect(forced, forced.output).toMatchObject({ code: 143 });
    expect(forced.output).toMatch(/second SIGTERM: exiting now, in the middle of the current step/);
  }, 300_000);

  it('strata worker: exits 0 after the current step of its scheduled run, long before the run ends', async () => {
    const r = await signalAt(['worker'], { ...env, STRATA_TIER_SCHEDULE: '* * * * * *', STRATA_WORKER_LISTEN: '127.0.0.1:0' }, /(: (move → \w+|compress) done in [\s\S]*){3}/);
    expect(r, r.output).toMatchObject({ code: 0, signal: null });
    const m = /tiering run stopped by SIGTERM after step (\d+) of (\d+)/.exec(r.output);
    expect(m, r.output).not.toBeNull();
    expect(Number(m![1])).toBeLessThan(10);
    expect(Number(m![2])).toBeGreaterThan(250);
    expect(r.output).toMatch(/"msg":"worker stopped"/);
    expect(r.afterSignalMs!).toBeLessThan(20_000);
    const j = await journal();
    expect(j.open).toEqual([]);
    expect(j.runs.at(-1)).toMatchObject({ done: Number(m![1]), failed: 0 });
  }, 300_000);

  it('the next run converges: every chunk in its tier, every row kept', async () => {
    const last = await strataProcess(['tier', 'run'], env);
    expect(last.code, last.output).toBe(0);
    expect(last.output).toMatch(/every planned chunk was handled/);
    expect(last.output).not.toMatch(/earlier run stopped mid-step/); // nothing was left running
    const again = await strataProcess(['tier', 'run'], env);
    expect(again.output).toMatch(/0 of 0 chunks reached their tier/);
    await withDb(dir, async (db) => {
      expect((await db.query(CHECKSUM)).rows[0]).toEqual(expected);
      // At most the step a forced exit cut failed ("interrupted", reconciled by a later run). The
      // embedded database runs a step without yielding, so the forced exit mostly lands between steps.
      const notDone = await db.query<{ error: string }>(`SELECT error FROM strata.job_journal WHERE state <> 'done'`);
      expect(notDone.rows.length).toBeLessThanOrEqual(1);
      for (const row of notDone.rows) expect(row.error).toMatch(/^interrupted: /);
    });
    // Hundreds of steps on the embedded database in one process: a minute or more under load.
  }, 600_000);
});

describe('SIGTERM stops strata archive run after the current step', () => {
  const dir = mkdtempSync(join(tmpdir(), 'strata-archive-stop-'));
  let s3: LocalS3;
  let env: NodeJS.ProcessEnv;
  let total: number;

  beforeAll(async () => {
    s3 = await startS3(['stop-test-1']);
    env = {
      ...process.env, STRATA_ADMIN_DATABASE_URL: `pglite:${dir}`, STRATA_LOG_LEVEL: 'info', STRATA_REGION: 'test-1', STRATA_ARCHIVE_BUCKETS: 'test-1=stop-test-1',
      STRATA_ARCHIVE_PREFIX: 'stopped', STRATA_S3_ENDPOINT: s3.endpoint, STRATA_ARCHIVE_STORAGE_CLASS: 'STANDARD', AWS_ACCESS_KEY_ID: S3_CREDENTIALS.accessKeyId, AWS_SECRET_ACCESS_KEY: S3_CREDENTIALS.secretAccessKey,
    };
    total = await withDb(dir, async (db) => {
      // Day-long chunks over ~80 days past the archive boundary (18 months): ~240 steps.
      await migrate(db, { chunkInterval: '1 day' });
      const f = await addFacility(db, { code: 'kiln', region: 'test-1' });
      await db.query(`INSERT INTO strata.series (facility_id, measurement, field) VALUES ($1, 'kiln', 'temp')`, [f.facility.id]);
      await db.exec(`INSERT INTO strata.metrics SELECT t, s.facility_id, s.id, 900 + extract(hour FROM t) FROM generate_series(now() - interval '20 months', now() - interval '17 months', interval '8 hours') t, strata.series s`);
      return (await db.query<{ n: number }>('SELECT count(*)::int AS n FROM strata.metrics')).rows[0]!.n;
    });
  });
  afterAll(async () => {
    await s3?.stop();
  });

  it('exits 0 after the step in progress, far from the end; nothing running; the next run converges', async () => {
    const r = await signalAt(['archive', 'run'], env, /(: (export-upload|verify|drop) done in [\s\S]*){4}/);
    expect(r, r.output).toMatchObject({ code: 0, signal: null });
    const m = /stopped by SIGTERM after step (\d+) of (\d+)/.exec(r.output);
    expect(m, r.output).not.toBeNull();
    expect(Number(m![1])).toBeLessThan(12);
    expect(Number(m![2])).toBeGreaterThan(150);
    expect(r.afterSignalMs!).toBeLessThan(20_000);
    await withDb(dir, async (db) => {
      expect((await db.query(`SELECT chunk, step FROM strata.job_journal WHERE state IN ('pending', 'running')`)).rows).toEqual([]);
      expect((await db.query(`SELECT 1 FROM strata.job_journal WHERE state = 'failed'`)).rows).toEqual([]);
    });

    const last = await strataProcess(['archive', 'run'], env);
    expect(last.code, last.output).toBe(0);
    expect(last.output).toMatch(/every due chunk was handled/);
    expect(last.output).not.toMatch(/earlier archive run stopped mid-step/);
    await withDb(dir, async (db) => {
      const entries = await listEntries(db);
      expect(entries.length).toBeGreaterThan(60);
      expect(entries.filter((e) => e.state !== 'dropped')).toEqual([]);
      expect((await s3.keys('stop-test-1')).filter((k) => k.startsWith('stopped/'))).toEqual(entries.map((e) => e.key).sort());
      const left = (await db.query<{ n: number }>('SELECT count(*)::int AS n FROM strata.metrics')).rows[0]!.n;
      expect(left + entries.reduce((s, e) => s + Number(e.rows), 0)).toBe(total);
    });
    // Two archive processes, the second exporting, uploading and dropping ~80 chunks: minutes under load.
  }, 600_000);
});
