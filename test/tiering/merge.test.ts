// Cold chunks merged per day and recompressed (the strongest compression, bench/results/compression.md),
// on a real TimescaleDB: three days of 6-hour chunks, one with a gap. Each day's adjacent chunks become
// one chunk with fewer, fuller batches; the rows are identical; a second run does nothing; a run
// stopped right after a merge is finished by the next one; a compressed chunk that received late rows
// is recompressed.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { migrate } from '../../src/db/migrate.ts';
import type { Db } from '../../src/db/port.ts';
import { addFacility } from '../../src/facilities/registry.ts';
import { silentLogger } from '../../src/log.ts';
import { readChunks } from '../../src/jobs/chunks.ts';
import { runTiering } from '../../src/tiering/job.ts';
import { tierPolicy, type TierPolicy } from '../../src/jobs/policy.ts';
import { tablespace, timescaleTargets, uniqueName } from '../support/databases.ts';

const CHECKSUM = `SELECT count(*)::int AS n, md5(coalesce(string_agg(facility_id || ':' || series_id || ':' || time::text || ':' || value::text, ',' ORDER BY time, series_id), '')) AS sum FROM strata.metrics`;
const BATCHES = `SELECT coalesce(sum(numrows_post_compression), 0)::int AS n FROM _timescaledb_catalog.compression_chunk_size`;

describe.each(timescaleTargets())('cold merge on $name', (target) => {
  let db: Db;
  let close: () => Promise<void>;
  const drops: (() => Promise<void>)[] = [];
  let policy: TierPolicy;
  let expected: { n: number; sum: string };
  let day0: Date;

  const checksum = async () => (await db.query<{ n: number; sum: string }>(CHECKSUM)).rows[0]!;
  const coldChunks = async () => (await readChunks(db)).filter((c) => c.rangeEnd.getTime() <= day0.getTime() + 3 * 86_400_000);

  beforeAll(async () => {
    let url: string;
    ({ db, close, url } = await target.open({ max: 1 }));
    const warm = await tablespace(db, url, 'warm_data');
    const cold = await tablespace(db, url, 'cold_data');
    drops.push(warm.drop, cold.drop);
    policy = tierPolicy({ warmTablespace: warm.name, coldTablespace: cold.name });
    await migrate(db, { chunkInterval: '6 hours' });
    for (const code of ['east', 'west']) await addFacility(db, { code: uniqueName(code), region: 'test-1' });
    await db.exec(`INSERT INTO strata.series (facility_id, measurement, field) SELECT f.id, 'press', fld FROM strata.facilities f, unnest(ARRAY['temp', 'rpm']) fld`);
    day0 = (await db.query<{ d: Date }>(`SELECT date_trunc('day', now() - interval '300 days', 'UTC') AS d`)).rows[0]!.d;
    // Three UTC days; on the second, nothing from 06:00 to 12:00 (no chunk there).
    await db.query(
      `INSERT INTO strata.metrics (time, facility_id, series_id, value)
       SELECT t, s.facility_id, s.id, round((s.id * 10 + sin(extract(epoch FROM t) / 3000))::numeric, 4)
         FROM generate_series($1::timestamptz, $1::timestamptz + interval '3 days' - interval '10 minutes', interval '10 minutes') t, strata.series s
        WHERE NOT (t >= $1::timestamptz + interval '30 hours' AND t < $1::timestamptz + interval '36 hours')`,
      [day0],
    );
    expected = await checksum();
  });

  afterAll(async () => {
    await close?.();
    for (const d of drops) await d().catch(() => {});
  });

  it('stopped right after a merge, the next run recompresses the merged chunk', async () => {
    let fired = false;
    const r = await runTiering(db, silentLogger, {
      policy,
      afterStep: (_c, s) => {
        if (s.kind === 'merge' && !fired) {
          fired = true;
          throw new Error('drill: stopped after merge');
        }
      },
    });
    expect(fired).toBe(true);
    expect(r.failures[0]).toMatchObject({ step: 'merge', error: 'drill: stopped after merge' });
    const partial = (await coldChunks()).filter((c) => c.partial);
    expect(partial.length).toBe(1);
    expect(partial[0]!.rangeEnd.getTime() - partial[0]!.rangeStart.getTime()).toBe(86_400_000);
    expect(await checksum()).toEqual(expected);
  });

  it('merges each day\'s adjacent cold chunks into one with fuller batches, rows unchanged, and then does nothing', async () => {
    const batchesBefore = (await db.query<{ n: number }>(BATCHES)).rows[0]!.n;
    const r = await runTiering(db, silentLogger, { policy });
    expect(r.failures).toEqual([]);
    expect(r.mergesDone).toBe(r.mergesPlanned);
    const chunks = await coldChunks();
    const spans = chunks.map((c) => [(c.rangeStart.getTime() - day0.getTime()) / 3_600_000, (c.rangeEnd.getTime() - day0.getTime()) / 3_600_000]);
    expect(spans).toEqual([[0, 24], [24, 30], [36, 48], [48, 72]]);
    for (const c of chunks) expect(c).toMatchObject({ compressed: true, partial: false, tablespace: policy.coldTablespace, compressedTablespace: policy.coldTablespace });
    expect(await checksum()).toEqual(expected);
    // 4 series: a 6-hour chunk holds 36 rows a series in one batch each; a merged day holds 144 rows a series, still one batch each.
    const batchesAfter = (await db.query<{ n: number }>(BATCHES)).rows[0]!.n;
    expect(batchesAfter).toBe(4 * chunks.length);
    expect(batchesAfter).toBeLessThan(batchesBefore);
    const again = await runTiering(db, silentLogger, { policy });
    expect(again).toMatchObject({ chunksPlanned: 0, mergesPlanned: 0, stepsDone: 0, failures: [] });
  });

  it('recompresses a compressed chunk that received late rows', async () => {
    const c = (await coldChunks())[0]!;
    await db.query(`INSERT INTO strata.metrics (time, facility_id, series_id, value) SELECT $1::timestamptz + interval '7 minutes', facility_id, id, 42 FROM strata.series`, [c.rangeStart]);
    expected = await checksum();
    expect((await coldChunks())[0]!.partial).toBe(true);
    const r = await runTiering(db, silentLogger, { policy });
    expect(r.failures).toEqual([]);
    expect(r.stepsDone).toBe(1);
    expect((await coldChunks())[0]!.partial).toBe(false);
    expect(await checksum()).toEqual(expected);
  });

  it('leaves cold chunks alone when merging is off', async () => {
    const r = await runTiering(db, silentLogger, { policy: tierPolicy({ ...policy, coldMerge: 'off' }) });
    expect(r).toMatchObject({ mergesPlanned: 0, stepsDone: 0 });
  });
});
