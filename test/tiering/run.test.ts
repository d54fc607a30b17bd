// `strata tier run` on a real TimescaleDB (PGlite-TimescaleDB always; a server too when
// STRATA_TEST_TIMESCALE_URL is set), with two years of data in 30-day chunks: the run reaches every
// chunk's tier, a second run does nothing, hot chunks are never touched, a failure after any kind of
// step converges on the next run, and the hypertable's rows are identical before and after.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { migrate } from '../../src/db/migrate.ts';
import type { Db } from '../../src/db/port.ts';
import { addFacility } from '../../src/facilities/registry.ts';
import { silentLogger } from '../../src/log.ts';
import { readChunks } from '../../src/jobs/chunks.ts';
import { runTiering } from '../../src/tiering/job.ts';
import { plan } from '../../src/tiering/plan.ts';
import { boundaries, tierPolicy, type TierPolicy } from '../../src/jobs/policy.ts';
import type { Step } from '../../src/tiering/types.ts';
import { tablespace, timescaleTargets, uniqueName } from '../support/databases.ts';

const CHECKSUM = `SELECT count(*)::int AS n, md5(coalesce(string_agg(facility_id || ':' || series_id || ':' || time::text || ':' || value::text, ',' ORDER BY time, series_id), '')) AS sum FROM strata.metrics`;

describe.each(timescaleTargets())('tiering on $name', (target) => {
  let db: Db;
  let close: () => Promise<void>;
  const drops: (() => Promise<void>)[] = [];
  let policy: TierPolicy;
  let expected: { n: number; sum: string };
  let url: string;

  const checksum = async () => (await db.query<{ n: number; sum: string }>(CHECKSUM)).rows[0]!;
  const state = async (p: TierPolicy = policy) => plan(await readChunks(db), await boundaries(db, p), p);
  /** relfilenode of every hot chunk: a rewrite, move or compression would change it. */
  const hotFiles = async () => {
    const p = await state();
    const hot = p.chunks.filter((c) => c.target === 'hot').map((c) => c.chunk.chunk);
    const r = await db.query<{ c: string; f: number }>(`SELECT c::text AS c, pg_relation_filenode(c::regclass)::bigint AS f FROM unnest($1::text[]) c ORDER BY 1`, [hot]);
    return r.rows;
  };

  beforeAll(async () => {
    ({ db, close, url } = await target.open({ max: 1 }));
    const warm = await tablespace(db, url, 'warm_data');
    const cold = await tablespace(db, url, 'cold_data');
    drops.push(warm.drop, cold.drop);
    policy = tierPolicy({ warmTablespace: warm.name, coldTablespace: cold.name });
    await migrate(db, { chunkInterval: '30 days' });
    for (const code of ['north', 'south']) await addFacility(db, { code: uniqueName(code), region: 'test-1' });
    await db.exec(`INSERT INTO strata.series (facility_id, measurement, field) SELECT f.id, 'press', fld FROM strata.facilities f, unnest(ARRAY['temp', 'rpm']) fld`);
    await db.exec(`
      INSERT INTO strata.metrics (time, facility_id, series_id, value)
      SELECT t, s.facility_id, s.id, round((s.id * 10 + sin(extract(epoch FROM t) / 86400))::numeric, 6)
        FROM generate_series(now() - interval '2 years', now(), interval '8 hours') t, strata.series s`);
    expected = await checksum();
  });

  afterAll(async () => {
    await close?.();
    for (const d of drops) await d().catch(() => {});
  });

  it('plans every chunk older than the hot boundary and nothing newer', async () => {
    const p = await state();
    expect(p.totals.chunks).toBeGreaterThanOrEqual(24);
    const byTarget = (t: string) => p.chunks.filter((c) => c.target === t);
    expect(byTarget('hot').every((c) => c.steps.length === 0)).toBe(true);
    expect(byTarget('warm').length).toBeGreaterThanOrEqual(4);
    expect(byTarget('cold').length).toBeGreaterThanOrEqual(10);
    expect(p.chunks.filter((c) => c.archiveDue).length).toBeGreaterThanOrEqual(4);
    for (const c of [...byTarget('warm'), ...byTarget('cold')]) expect(c.steps.map((s) => s.kind)).toEqual(['move', 'compress']);
  });

  it('fails after each kind of step, and the next run converges without losing a row', async () => {
    const hot = await hotFiles();
    const kinds: Step['kind'][] = ['move', 'compress'];
    for (const kind of kinds) {
      let fired = false;
      const r = await runTiering(db, silentLogger, {
        policy,
        maxChunks: 2,
        afterStep: (_chunk, step) => {
          if (step.kind === kind && !fired) {
            fired = true;
            throw new Error(`drill: stopped after ${kind}`);
          }
        },
      });
      expect(fired).toBe(true);
      expect(r.stepsFailed).toBe(1);
      expect(r.failures[0]).toMatchObject({ step: kind, error: `drill: stopped after ${kind}` });
      expect(await checksum()).toEqual(expected);
    }
    // Compressed chunks in the warm tablespace that the policy wants cold: a policy with a later cold
    // boundary tiers them warm first; the cold step then moves each chunk with its compressed chunk.
    const later = tierPolicy({ ...policy, coldAfter: '20 months', archiveAfter: '30 months' });
    const first = await runTiering(db, silentLogger, { policy: later });
    expect(first.failures).toEqual([]);
    const warmCompressed = (await state()).chunks.filter((c) => c.chunk.compressed && c.chunk.tablespace === policy.warmTablespace && c.target === 'cold');
    expect(warmCompressed.length).toBeGreaterThanOrEqual(3);
    for (const c of warmCompressed) expect(c.steps).toEqual([{ kind: 'move-compressed', tablespace: policy.coldTablespace }]);
    let fired = false;
    const r = await runTiering(db, silentLogger, { policy, afterStep: (_c, s) => { if (s.kind === 'move-compressed' && !fired) { fired = true; throw new Error('drill: stopped after move-compressed'); } } });
    expect(fired).toBe(true);
    expect(r.stepsFailed).toBe(1);
    expect(await checksum()).toEqual(expected);
    expect(await hotFiles()).toEqual(hot);
  });

  it('fails a chunk whose rows changed across its steps, journals why, and leaves the rows alone', async () => {
    // A fresh chunk 26 months back, so there is a chunk with steps left.
    await db.exec(`INSERT INTO strata.metrics (time, facility_id, series_id, value) SELECT t, s.facility_id, s.id, s.id FROM generate_series(now() - interval '26 months', now() - interval '25 months', interval '8 hours') t, strata.series s`);
    expected = await checksum();
    let inserted: Date | null = null;
    const r = await runTiering(db, silentLogger, {
      policy,
      maxChunks: 1,
      afterStep: async (chunk) => {
        if (inserted) return;
        // A late row lands in the chunk between its steps (what verification exists to notice).
        const c = (await readChunks(db)).find((x) => x.chunk === chunk)!;
        inserted = new Date(c.rangeStart.getTime() + 60_000);
        await db.query(`INSERT INTO strata.metrics (time, facility_id, series_id, value) SELECT $1, facility_id, id, -1 FROM strata.series ORDER BY id LIMIT 1`, [inserted]);
      },
    });
    expect(inserted).not.toBeNull();
    expect(r.chunksFailed).toBe(1);
    expect(r.failures).toEqual([{ chunk: expect.any(String), step: 'verify', error: expect.stringMatching(/^content changed across the steps: \d+ rows \(checksum -?\d+\) before, \d+ rows \(checksum -?\d+\) after/) }]);
    const [, before, after] = /(\d+) rows .* (\d+) rows/.exec(r.failures[0]!.error)!;
    expect(Number(after)).toBe(Number(before) + 1);
    const journal = await db.query(`SELECT state, error FROM strata.job_journal WHERE step = 'verify' AND chunk = $1`, [r.failures[0]!.chunk]);
    expect(journal.rows).toEqual([{ state: 'failed', error: r.failures[0]!.error }]);
    await db.query(`DELETE FROM strata.metrics WHERE time = $1 AND value = -1`, [inserted]);
    expect(await checksum()).toEqual(expected);
  });

  it('reaches every chunk\'s tier, keeps every row, and leaves hot chunks untouched', async () => {
    const hot = await hotFiles();
    const r = await runTiering(db, silentLogger, { policy });
    expect(r.failures).toEqual([]);
    expect(r.stopped).toBe('done');
    const p = await state();
    expect(p.totals.steps).toBe(0);
    for (const c of p.chunks) expect(c.current).toBe(c.target);
    expect(p.totals.byTier.cold.chunks).toBeGreaterThanOrEqual(10);
    expect(await checksum()).toEqual(expected);
    expect(await hotFiles()).toEqual(hot);
    const journal = await db.query<{ state: string; n: number }>(`SELECT state, count(*)::int AS n FROM strata.job_journal WHERE job = 'tiering' GROUP BY 1 ORDER BY 1`);
    expect(journal.rows.map((x) => x.state)).toEqual(['done', 'failed']);
  });

  it('marks a step a killed worker left running as interrupted, and still converges', async () => {
    const chunk = (await state()).chunks[0]!.chunk.chunk;
    await db.query(`INSERT INTO strata.job_journal (job, run_id, hypertable, chunk, step, state, started_at) VALUES ('tiering', gen_random_uuid(), 'strata.metrics', $1, 'move', 'running', now())`, [chunk]);
    const r = await runTiering(db, silentLogger, { policy });
    expect(r.interruptedSteps).toBe(1);
    const row = await db.query<{ state: string; error: string }>(`SELECT state, error FROM strata.job_journal WHERE chunk = $1 AND error LIKE 'interrupted%'`, [chunk]);
    expect(row.rows).toEqual([{ state: 'failed', error: expect.stringMatching(/^interrupted: the worker stopped before this step finished/) }]);
  });

  it.runIf(target.name !== 'pglite-timescaledb')('converges after its backend is terminated after each kind of step (a server only: PGlite has no second connection)', async () => {
    const { openDb } = await import('../../src/db/open.ts');
    const killer = await openDb(url, { max: 1 });
    try {
      const kinds: Step['kind'][] = ['move', 'compress', 'move-compressed'];
      for (const [i, kind] of kinds.entries()) {
        // Fresh untiered chunks further back for move and compress; for move-compressed, a policy whose
        // cold boundary moved nearer, so warm compressed chunks must go cold.
        const p = kind === 'move-compressed' ? tierPolicy({ ...policy, coldAfter: '60 days' }) : policy;
        if (kind !== 'move-compressed') {
          await db.query(
            `INSERT INTO strata.metrics (time, facility_id, series_id, value)
             SELECT t, s.facility_id, s.id, s.id + $1 FROM generate_series(now() - make_interval(months => 30 + 3 * $1), now() - make_interval(months => 29 + 3 * $1), interval '8 hours') t, strata.series s`,
            [i],
          );
        }
        const want = await checksum();
        let fired = false;
        const run = runTiering(db, silentLogger, {
          policy: p,
          afterStep: async (_c, s) => {
            if (s.kind !== kind || fired) return;
            fired = true;
            await killer.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()`);
          },
        });
        // The run either dies with its connection or, on the pool's new connection, retakes the free lock and goes on.
        await run.catch(() => {});
        expect(fired).toBe(true);
        const again = await runTiering(db, silentLogger, { policy: p });
        expect(again.failures).toEqual([]);
        expect((await state(p)).totals.steps).toBe(0);
        expect(await checksum()).toEqual(want);
      }
      const back = await runTiering(db, silentLogger, { policy }); // the chunks the nearer boundary made cold go back to warm
      expect(back.failures).toEqual([]);
      expect(back.stepsDone).toBeGreaterThanOrEqual(1);
      const open = await db.query(`SELECT 1 FROM strata.job_journal WHERE state IN ('pending', 'running')`);
      expect(open.rows).toEqual([]);
    } finally {
      await killer.close();
    }
  });

  it('does nothing on a second run', async () => {
    const r = await runTiering(db, silentLogger, { policy });
    expect(r).toMatchObject({ chunksPlanned: 0, stepsDone: 0, stepsFailed: 0, stopped: 'done' });
  });
});
