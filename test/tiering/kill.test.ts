// `strata tier run` killed with SIGKILL, as an operator's host or an OOM killer would: after each
// kind of step, and once in the middle of a step. The next run reconciles the journal, re-reads the
// catalog and converges, and the hypertable's rows are identical to those before the first run.
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { migrate } from '../../src/db/migrate.ts';
import { openPglite } from '../../src/db/pglite.ts';
import { addFacility } from '../../src/facilities/registry.ts';
import { strataProcess } from '../support/child.ts';

const dir = mkdtempSync(join(tmpdir(), 'strata-tier-kill-'));
const env = { ...process.env, STRATA_ADMIN_DATABASE_URL: `pglite:${dir}`, STRATA_LOG_LEVEL: 'info' };
const CHECKSUM = `SELECT count(*)::int AS n, md5(coalesce(string_agg(series_id || ':' || time::text || ':' || value::text, ',' ORDER BY time, series_id), '')) AS sum FROM strata.metrics`;

const tierRun = (extraEnv: Record<string, string>, killAt?: RegExp) => strataProcess(['tier', 'run'], { ...env, ...extraEnv }, killAt);

async function withDb<T>(fn: (db: Awaited<ReturnType<typeof openPglite>>) => Promise<T>): Promise<T> {
  const db = await openPglite(`pglite:${dir}`);
  try {
    return await fn(db);
  } finally {
    await db.close();
  }
}

let expected: { n: number; sum: string };

beforeAll(async () => {
  expected = await withDb(async (db) => {
    await db.ensureTablespace('warm_data');
    await db.ensureTablespace('cold_data');
    await migrate(db, { chunkInterval: '30 days' });
    const f = await addFacility(db, { code: 'forge', region: 'test-1' });
    await db.query(`INSERT INTO strata.series (facility_id, measurement, field) VALUES ($1, 'press', 'temp'), ($1, 'press', 'rpm')`, [f.facility.id]);
    await db.exec(`INSERT INTO strata.metrics SELECT t, s.facility_id, s.id, round((s.id * 7 + cos(extract(epoch FROM t) / 9000))::numeric, 5) FROM generate_series(now() - interval '500 days', now(), interval '3 hours') t, strata.series s`);
    return (await db.query<{ n: number; sum: string }>(CHECKSUM)).rows[0]!;
  });
});

describe('strata tier run killed with SIGKILL', () => {
  it('converges after a kill after each kind of step and in the middle of one, without losing a row', async () => {
    // The cold boundary at 300 days first, so some chunks are compressed in warm_data; the default
    // (180 days) then needs move-compressed steps to take them cold.
    const laterCold = { STRATA_TIER_COLD_AFTER: '300 days' };
    const kills: [Record<string, string>, RegExp][] = [
      [laterCold, /: move → warm_data done in/],
      [laterCold, /: compress done in/],
      [laterCold, /"msg":"tiering \d+\/\d+ \S+: move → \w+"/], // mid-step: killed as the move starts
    ];
    for (const [extra, at] of kills) {
      const r = await tierRun(extra, at);
      expect(r, r.output).toMatchObject({ killed: true });
    }
    const warm = await tierRun(laterCold);
    expect(warm.code, warm.output).toBe(0);
    expect(warm.output).toMatch(/earlier run stopped mid-step; continuing from the catalog/);
    const cold = await tierRun({}, /: move-compressed → cold_data done in/);
    expect(cold, cold.output).toMatchObject({ killed: true });

    const last = await tierRun({});
    expect(last.code, last.output).toBe(0);
    expect(last.output).toMatch(/every planned chunk was handled/);
    const again = await tierRun({});
    expect(again.output).toMatch(/0 of 0 chunks reached their tier/);
    await withDb(async (db) => {
      expect((await db.query(CHECKSUM)).rows[0]).toEqual(expected);
      const open = await db.query(`SELECT chunk, step FROM strata.job_journal WHERE state IN ('pending', 'running')`);
      expect(open.rows).toEqual([]);
      const states = await db.query<{ tablespace: string | null; compressed: boolean; n: number }>(
        `SELECT t.spcname AS tablespace, ch.is_compressed AS compressed, count(*)::int AS n
           FROM timescaledb_information.chunks ch JOIN pg_class c ON c.oid = format('%I.%I', ch.chunk_schema, ch.chunk_name)::regclass
           LEFT JOIN pg_tablespace t ON t.oid = c.reltablespace
          GROUP BY 1, 2 ORDER BY 1, 2`,
      );
      expect(states.rows.map((r) => `${r.tablespace ?? 'default'}:${r.compressed}`)).toEqual(['cold_data:true', 'warm_data:true', 'default:false']);
    });
    // Seven `strata tier run` processes in a row, each starting tsx and PGlite's TimescaleDB (WASM)
    // afresh: 40-60 s on an idle 2-core machine, two or three times that while other suites run
    // beside it. Nothing here waits on a clock (each run ends by itself or at its kill pattern), so the
    // limit only has to be generous.
  }, 300_000);
});
