// A real failover during a tiering run (test/support/standby.ts: primary + streaming standby behind
// HAProxy). The job lock is held through HAProxy on the primary, as a worker holds it on its direct
// connection; the primary stops mid-run and the standby is promoted. The run stops at once: the
// step in flight is journaled failed with "lost the job lock: <reason>", no step starts after it, and
// the lock is not taken again on the new primary under the same run id. The next run takes the lock
// on the new primary and converges.
//
// The chunks are on PGlite-TimescaleDB (the Debian PostgreSQL servers have no TimescaleDB), so only
// the lock's session lives on the failing server here; the step statements of a production run on the
// same server fail with their connection as well, and the run stops the same way.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { migrate } from '../../src/db/migrate.ts';
import { openPglite } from '../../src/db/pglite.ts';
import { addFacility } from '../../src/facilities/registry.ts';
import { connectionLocks, type JobLock } from '../../src/jobs/lock.ts';
import { readJournal } from '../../src/jobs/journal.ts';
import { silentLogger } from '../../src/log.ts';
import { runTiering } from '../../src/tiering/job.ts';
import { tierPolicy } from '../../src/jobs/policy.ts';
import { startFailoverStack, type FailoverStack } from '../support/standby.ts';

const ROWS = `SELECT count(*)::int AS n, md5(coalesce(string_agg(series_id || ':' || time::text || ':' || value::text, ',' ORDER BY time, series_id), '')) AS sum FROM strata.metrics`;
let stack: FailoverStack;

beforeAll(async () => {
  stack = await startFailoverStack();
});
afterAll(async () => {
  await stack?.destroy();
});

describe('a failover during a tiering run', () => {
  it('stops the run at once with the lost lock journaled; the next run, on the new primary, converges', async () => {
    const db = await openPglite('pglite:memory');
    try {
      await db.ensureTablespace('warm_data');
      await db.ensureTablespace('cold_data');
      await migrate(db, { chunkInterval: '30 days' });
      const f = await addFacility(db, { code: 'forge', region: 'test-1' });
      await db.query(`INSERT INTO strata.series (facility_id, measurement, field) VALUES ($1, 'press', 'temp')`, [f.facility.id]);
      await db.exec(`INSERT INTO strata.metrics SELECT t, s.facility_id, s.id, round((s.id * 7 + cos(extract(epoch FROM t) / 9000))::numeric, 5) FROM generate_series(now() - interval '400 days', now(), interval '6 hours') t, strata.series s`);
      const rows = (await db.query(ROWS)).rows[0];

      const url = stack.haproxyUrl('postgres');
      const source = connectionLocks(url, { heartbeatMs: 500, checkTimeoutMs: 5_000 });
      const taken: JobLock[] = [];
      let steps = 0;
      let failedOver = false;
      const r = await runTiering(db, silentLogger, {
        policy: tierPolicy({}),
        locks: async (h) => {
          const l = await source(h);
          if (l) taken.push(l);
          return l;
        },
        afterStep: async () => {
          if (++steps !== 2) return;
          // The primary goes away in the middle of the run (after the second step's statements, before it is journaled).
          await stack.stopPrimary('fast');
          await stack.promoteStandby();
          failedOver = true;
        },
      });
      expect(failedOver).toBe(true);
      expect(r).toMatchObject({ stopped: 'lock-lost', stepsDone: 1, stepsFailed: 1 });
      expect(r.failures).toEqual([{ chunk: expect.any(String), step: expect.any(String), error: expect.stringMatching(/^lost the job lock: /) }]);
      expect(taken).toHaveLength(1);
      const journal = await readJournal(db, { runId: r.runId });
      expect(journal.map((j) => j.state)).toEqual(['done', 'failed']);
      expect(journal[1]!.error).toMatch(/^lost the job lock: /);
      // Nothing took the lock on the new primary for that run.
      expect(await stack.query('standby', `SELECT pid FROM pg_locks WHERE locktype = 'advisory'`)).toEqual([]);

      const next = await runTiering(db, silentLogger, { policy: tierPolicy({}), locks: connectionLocks(url) });
      expect(next).toMatchObject({ stopped: 'done', failures: [], interruptedSteps: 0 });
      expect(next.chunksDone).toBe(next.chunksPlanned);
      expect((await db.query(ROWS)).rows[0]).toEqual(rows);
      expect((await db.query(`SELECT 1 FROM strata.job_journal WHERE state IN ('pending', 'running')`)).rows).toEqual([]);
    } finally {
      await db.close();
    }
    // Starting a primary, a base backup, a standby and HAProxy, then promoting: a minute or more under load.
  }, 240_000);
});
