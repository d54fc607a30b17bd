// Facility isolation, proved adversarially on a real TimescaleDB (PGlite-TimescaleDB always, a server
// when STRATA_TEST_TIMESCALE_URL is set): facility A's reader, over hot, compressed and
// tablespace-moved chunks, sees exactly A's rows and nothing else, whatever it tries.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { migrate } from '../src/db/migrate.ts';
import type { Db } from '../src/db/port.ts';
import { grantFacility, revokeFacility } from '../src/facilities/grants.ts';
import { addFacility } from '../src/facilities/registry.ts';
import { tablespace, timescaleTargets, uniqueName } from './support/databases.ts';

describe.each(timescaleTargets())('facility isolation on $name', (target) => {
  let db: Db;
  let close: () => Promise<void>;
  let space: { name: string; drop(): Promise<void> };
  const tag = uniqueName('iso').slice(4);
  const A = { code: `a_${tag}`, id: 0, role: '' };
  const B = { code: `b_${tag}`, id: 0, role: '' };
  const multi = `strata_multi_${tag}`;
  const leakFn = `public.leak_${tag}`;
  const leakLog = `public.leak_log_${tag}`;
  let expected: { a: Sum; b: Sum; ab: Sum };
  type Sum = { n: number; sum: string };
  /** Row count and an md5 over every row in a fixed order: equal only for exactly the same rows. */
  const CHECKSUM = `count(*)::int AS n, md5(coalesce(string_agg(facility_id || ':' || series_id || ':' || time::text || ':' || value::text, ',' ORDER BY time, series_id), '')) AS sum`;
  const EMPTY = { n: 0, sum: 'd41d8cd98f00b204e9800998ecf8427e' };

  /** Runs statements as `role` in one transaction (SET LOCAL ROLE), returning the last one's rows. */
  async function as<R = Record<string, unknown>>(role: string, ...statements: string[]): Promise<R[]> {
    return db.transaction(async (tx) => {
      await tx.exec(`SET LOCAL ROLE "${role}"`);
      let rows: R[] = [];
      for (const s of statements) rows = (await tx.query<R>(s)).rows;
      return rows;
    });
  }
  const totals = async (role: string) => (await as<Sum>(role, `SELECT ${CHECKSUM} FROM strata.facility_metrics`))[0]!;

  beforeAll(async () => {
    let url: string;
    ({ db, close, url } = await target.open());
    await migrate(db, { chunkInterval: '1 day' });
    space = await tablespace(db, url, 'warm_data');
    for (const f of [A, B]) {
      const created = await addFacility(db, { code: f.code, region: 'test-1' });
      f.id = created.facility.id;
      f.role = created.facility.readerRole;
    }
    await db.exec(`CREATE ROLE ${multi} NOLOGIN`);
    await db.query(`INSERT INTO strata.series (facility_id, measurement, field) VALUES ($1, 'a_press', 'temp'), ($1, 'a_press', 'rpm'), ($2, 'b_secret', 'temp')`, [A.id, B.id]);
    // A's values are positive, B's negative: a single negative value reaching A is a leak.
    await db.query(
      `INSERT INTO strata.metrics (time, facility_id, series_id, value)
       SELECT t, s.facility_id, s.id, CASE WHEN s.facility_id = $1 THEN 1 ELSE -1 END * (1 + extract(epoch FROM t) / 1e6 + s.id)
         FROM generate_series(date_trunc('day', now()) - interval '12 days', now(), interval '20 minutes') t, strata.series s
        WHERE s.facility_id IN ($1, $2)`,
      [A.id, B.id],
    );
    const chunk = async (daysAgo: number) =>
      (
        await db.query<{ c: string }>(
          `SELECT c::text AS c FROM show_chunks('strata.metrics', older_than => date_trunc('day', now()) - make_interval(days => $1 - 1), newer_than => date_trunc('day', now()) - make_interval(days => $1 + 1)) c`,
          [daysAgo],
        )
      ).rows[0]!.c;
    const [compressed, compressedMoved, moved] = [await chunk(5), await chunk(9), await chunk(11)];
    await db.query('SELECT compress_chunk($1::regclass)', [compressed]);
    await db.query('SELECT compress_chunk($1::regclass)', [compressedMoved]);
    await db.query(`SELECT move_chunk($1::regclass, $2, $2)`, [compressedMoved, space.name]);
    const reorder = (await db.query<{ i: string }>(`SELECT indexrelid::regclass::text AS i FROM pg_index WHERE indrelid = $1::regclass AND pg_get_indexdef(indexrelid) LIKE '%facility_id, series_id%'`, [moved])).rows[0]!.i;
    await db.query(`SELECT move_chunk($1::regclass, $2, $2, $3::regclass)`, [moved, space.name, reorder]);
    await grantFacility(db, A.role, A.code); // already granted by add: unchanged
    await grantFacility(db, multi, A.code);
    await grantFacility(db, multi, B.code);
    const t = async (ids: number[]) => (await db.query<Sum>(`SELECT ${CHECKSUM} FROM strata.metrics WHERE facility_id = ANY($1)`, [ids])).rows[0]!;
    expected = { a: await t([A.id]), b: await t([B.id]), ab: await t([A.id, B.id]) };
    // Materialize the hourly rollup (0007) over everything but the last hour, compressed chunks included.
    await db.exec(`CALL refresh_continuous_aggregate('strata.metrics_hourly', NULL, date_trunc('hour', now()) - interval '1 hour')`);
    await db.exec(`CREATE TABLE ${leakLog} (v text); GRANT INSERT ON ${leakLog} TO PUBLIC;
      CREATE FUNCTION ${leakFn}(v anyelement) RETURNS boolean LANGUAGE plpgsql COST 0.0001 AS $$
      BEGIN RAISE NOTICE 'leak %', v; INSERT INTO ${leakLog} VALUES (v::text); RETURN true; END $$;`);
  }, 180_000);

  afterAll(async () => {
    await db?.exec(`DROP ROLE IF EXISTS ${multi}`).catch(() => {});
    await close?.();
    await space?.drop();
  });

  it('has the tiers it claims: hot, compressed, and moved (compressed and not) chunks', async () => {
    const r = await db.query<{ compressed: boolean; ts: string | null }>(
      `SELECT is_compressed AS compressed, chunk_tablespace AS ts FROM timescaledb_information.chunks WHERE hypertable_name = 'metrics' ORDER BY range_start`,
    );
    expect(r.rows.filter((c) => c.compressed && c.ts === space.name)).toHaveLength(1);
    expect(r.rows.filter((c) => !c.compressed && c.ts === space.name)).toHaveLength(1);
    expect(r.rows.filter((c) => c.compressed && c.ts !== space.name)).toHaveLength(1);
    expect(r.rows.filter((c) => !c.compressed && c.ts !== space.name).length).toBeGreaterThanOrEqual(8);
  });

  it("A's reader sees exactly A's rows in every tier (count and checksum)", async () => {
    expect(expected.a.n).toBeGreaterThan(1_000);
    expect(await totals(A.role)).toEqual(expected.a);
    const perTier = await as<{ days: number; n: number }>(
      A.role,
      `SELECT (date_trunc('day', now())::date - time::date) AS days, count(*)::int AS n FROM strata.facility_metrics WHERE time < date_trunc('day', now()) - interval '4 days' GROUP BY 1 ORDER BY 1`,
    );
    expect(perTier.map((r) => r.days)).toEqual([5, 6, 7, 8, 9, 10, 11, 12]);
    expect(perTier.every((r) => r.n === 2 * 72)).toBe(true);
    expect(await totals(B.role)).toEqual(expected.b);
  });

  it('denies the reader the hypertable, every chunk, every compressed chunk and the grants table', async () => {
    const chunks = (await db.query<{ c: string }>(`SELECT c::text AS c FROM show_chunks('strata.metrics') c`)).rows.map((r) => r.c);
    const compressed = (
      await db.query<{ c: string }>(
        `SELECT format('%I.%I', schema_name, table_name) AS c FROM _timescaledb_catalog.chunk WHERE id IN (SELECT compressed_chunk_id FROM _timescaledb_catalog.chunk WHERE compressed_chunk_id IS NOT NULL)`,
      )
    ).rows.map((r) => r.c);
    expect(compressed).toHaveLength(2);
    for (const table of ['strata.metrics', 'strata.facility_grants', ...chunks, ...compressed]) {
      await expect(as(A.role, `SELECT 1 FROM ${table} LIMIT 1`), table).rejects.toThrow(/permission denied/);
    }
  });

  it('a chunk created after the grants (a new day) is denied directly too, and its rows reach A through the view', async () => {
    await db.query(`INSERT INTO strata.metrics VALUES (date_trunc('day', now()) + interval '3 days', $1, (SELECT min(id) FROM strata.series WHERE facility_id = $1), 42)`, [A.id]);
    const newest = (await db.query<{ c: string }>(`SELECT c::text AS c FROM show_chunks('strata.metrics', newer_than => date_trunc('day', now()) + interval '2 days') c`)).rows;
    expect(newest).toHaveLength(1);
    await expect(as(A.role, `SELECT 1 FROM ${newest[0]!.c}`)).rejects.toThrow(/permission denied/);
    expect((await totals(A.role)).n).toBe(expected.a.n + 1);
    await db.query(`DELETE FROM strata.metrics WHERE time = date_trunc('day', now()) + interval '3 days'`);
  });

  it('settings and set_config change nothing the reader can see', async () => {
    const seen = await as<Sum>(
      A.role,
      `SELECT set_config('strata.facility_id', '${B.id}', true)`,
      `SELECT set_config('application_name', '${B.role}', true)`,
      `SET LOCAL search_path = strata, public`,
      `SET LOCAL row_security = on`,
      `SELECT ${CHECKSUM} FROM facility_metrics`,
    );
    expect(seen[0]).toEqual(expected.a);
    // SET ROLE and SET SESSION AUTHORIZATION depend on the session's login, which here is a superuser:
    // test/isolation-login.test.ts tries them from a real reader login.
    // With row security off, a query that row security would filter fails rather than showing more.
    await expect(as(A.role, 'SET LOCAL row_security = off', 'SELECT count(*) FROM strata.series')).rejects.toThrow(/row-level security/);
  });

  it("a leaky function in the WHERE clause never receives a value from B's rows, in metrics or catalogs", async () => {
    await db.exec(`TRUNCATE ${leakLog}`);
    // Sequential scans, so the facility filter is an ordinary qual that a cheaper function could overtake.
    const scans = ['SET LOCAL enable_indexscan = off', 'SET LOCAL enable_bitmapscan = off'];
    const n = await as<{ n: number }>(A.role, ...scans, `SELECT count(*)::int AS n FROM strata.facility_metrics WHERE ${leakFn}(value)`);
    expect(n[0]!.n).toBe(expected.a.n);
    await as(A.role, ...scans, `SELECT * FROM strata.series WHERE ${leakFn}(measurement)`, `SELECT code FROM strata.facilities WHERE ${leakFn}(code)`);
    const log = (await db.query<{ v: string }>(`SELECT v FROM ${leakLog}`)).rows.map((r) => r.v);
    expect(log.length).toBeGreaterThanOrEqual(expected.a.n); // the function did run, on every row A may see
    expect(log.filter((v) => v.startsWith('-') || v.includes('b_'))).toEqual([]);
  });

  it("catalogs show A's reader only A's facilities, series and archive entries, never token hashes", async () => {
    expect(await as(A.role, 'SELECT code FROM strata.facilities ORDER BY code')).toEqual([{ code: A.code }]);
    expect(await as(A.role, 'SELECT measurement, field FROM strata.series ORDER BY field')).toEqual([
      { measurement: 'a_press', field: 'rpm' },
      { measurement: 'a_press', field: 'temp' },
    ]);
    await expect(as(A.role, 'SELECT token_hash FROM strata.facilities')).rejects.toThrow(/permission denied/);
    await db.query(
      `INSERT INTO strata.archive_catalog (hypertable, region, range_start, range_end, bucket, object_key, storage_class, state, facility_ids)
       VALUES ('strata.metrics', 'test-1', now() - interval '600 days', now() - interval '599 days', 'b', $3, 'GLACIER', 'verified', ARRAY[$1::int]),
              ('strata.metrics', 'test-1', now() - interval '599 days', now() - interval '598 days', 'b', $4, 'GLACIER', 'verified', ARRAY[$2::int])`,
      [A.id, B.id, `a-${tag}`, `b-${tag}`],
    );
    expect(await as(A.role, 'SELECT region, storage_class FROM strata.archive_catalog')).toEqual([{ region: 'test-1', storage_class: 'GLACIER' }]);
    await expect(as(A.role, 'SELECT rows_per_facility FROM strata.archive_catalog')).rejects.toThrow(/permission denied/);
  });

  it('a role granted A and B sees both; the maintainer sees every row', async () => {
    expect(await totals(multi)).toEqual(expected.ab);
    const all = await as<{ n: number }>('strata_maintainer', 'SELECT count(*)::int AS n FROM strata.metrics');
    expect(all[0]!.n).toBe(expected.a.n + expected.b.n);
    const series = await as<{ n: number }>('strata_maintainer', 'SELECT count(*)::int AS n FROM strata.series');
    expect(series[0]!.n).toBe(3);
  });

  it("the facility filter reaches the compressed chunks' segment index, and chunk exclusion still works", async () => {
    const plan = (
      await as<{ 'QUERY PLAN': string }>(
        A.role,
        'SET LOCAL enable_seqscan = off',
        `EXPLAIN (COSTS OFF) SELECT series_id, avg(value) FROM strata.facility_metrics
          WHERE time > date_trunc('day', now()) - interval '6 days' AND time < date_trunc('day', now()) - interval '4 days' GROUP BY 1`,
      )
    )
      .map((r) => r['QUERY PLAN'])
      .join('\n');
    expect(plan).toMatch(/compress_hyper_\d+_\d+_chunk/);
    expect(plan).toMatch(/Index Cond: \(\(facility_id = ANY \((\(InitPlan \d+\)\.col1|\$\d+)\)\)/);
    expect(plan).toMatch(/Chunks excluded during startup: \d+/);
  });

  it("the hourly rollup shows A's reader exactly A's rows, aggregated; the aggregate and its materialization are denied", async () => {
    const rollup = await as<{ n: number; facilities: number[] }>(A.role, 'SELECT sum(samples)::int AS n, array_agg(DISTINCT facility_id) AS facilities FROM strata.facility_metrics_hourly');
    expect(rollup[0]).toEqual({ n: expected.a.n, facilities: [A.id] });
    const both = await as<{ n: number }>(multi, 'SELECT sum(samples)::int AS n FROM strata.facility_metrics_hourly');
    expect(both[0]!.n).toBe(expected.ab.n);
    const materialized = (
      await db.query<{ t: string }>(`SELECT format('%I.%I', materialization_hypertable_schema, materialization_hypertable_name) AS t FROM timescaledb_information.continuous_aggregates WHERE view_name = 'metrics_hourly'`)
    ).rows[0]!.t;
    for (const table of ['strata.metrics_hourly', materialized]) {
      await expect(as(A.role, `SELECT 1 FROM ${table} LIMIT 1`), table).rejects.toThrow(/permission denied/);
    }
    await db.exec(`TRUNCATE ${leakLog}`);
    await as(A.role, 'SET LOCAL enable_indexscan = off', 'SET LOCAL enable_bitmapscan = off', `SELECT count(*) FROM strata.facility_metrics_hourly WHERE ${leakFn}(min)`);
    const log = (await db.query<{ v: string }>(`SELECT v FROM ${leakLog}`)).rows.map((r) => r.v);
    expect(log.length).toBeGreaterThan(0);
    expect(log.filter((v) => v.startsWith('-'))).toEqual([]);
  });

  it('after revoke, A sees nothing, in metrics or catalogs', async () => {
    expect((await revokeFacility(db, A.role, A.code)).changed).toBe(true);
    expect(await totals(A.role)).toEqual(EMPTY);
    expect(await as(A.role, 'SELECT * FROM strata.series')).toEqual([]);
    expect(await as(A.role, 'SELECT code FROM strata.facilities')).toEqual([]);
    expect(await as(A.role, 'SELECT * FROM strata.facility_metrics_hourly')).toEqual([]);
    expect((await revokeFacility(db, A.role, A.code)).changed).toBe(false);
  });
});
