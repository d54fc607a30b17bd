// Cost of facility isolation: a facility's last-hour and last-30-days aggregates read by its reader
// through strata.facility_metrics, against the same queries on strata.metrics as its owner
// (strata_maintainer) with the facility filter written out, in the same run on the same data.
// Older chunks are compressed, as in the warm and cold tiers. Target: view ≤ 1.2× the base table.
//
//   npx tsx bench/facility-view.ts --url postgres://postgres@127.0.0.1:5432/postgres [--facilities 20]
//       [--series 50] [--days 31] [--step-minutes 5] [--runs 15]
//
// The URL is a superuser connection to a TimescaleDB server; a scratch database is created and dropped.
import { parseArgs } from 'node:util';
import pg from 'pg';
import { migrate } from '../src/db/migrate.ts';
import { addFacility } from '../src/facilities/registry.ts';
import { scratchDatabase } from './support/scratch.ts';
import { writeTable } from './support/table.ts';

const { values } = parseArgs({
  options: {
    url: { type: 'string' },
    facilities: { type: 'string', default: '20' },
    series: { type: 'string', default: '50' },
    days: { type: 'string', default: '31' },
    'step-minutes': { type: 'string', default: '5' },
    runs: { type: 'string', default: '15' },
    out: { type: 'string', default: 'bench/results' },
  },
});
if (!values.url) {
  console.error('usage: npx tsx bench/facility-view.ts --url <superuser URL of a TimescaleDB server> [--facilities N] [--series N] [--days N]');
  process.exit(64);
}
const F = Number(values.facilities);
const S = Number(values.series);
const days = Number(values.days);
const step = Number(values['step-minutes']);
const runs = Number(values.runs);

const scratch = await scratchDatabase(values.url, 'strata_viewbench');
const db = scratch.db;
const direct = new URL(scratch.url);
const roles: string[] = [];
const clients: pg.Client[] = [];

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

try {
  await migrate(db, { chunkInterval: '1 day' });
  let reader = { role: '', password: '', id: 0 };
  for (let f = 1; f <= F; f++) {
    const created = await addFacility(db, { code: `bench-${f}`, region: 'bench' });
    roles.push(created.facility.readerRole);
    if (f === Math.ceil(F / 2)) reader = { role: created.facility.readerRole, password: created.readerPassword, id: created.facility.id };
  }
  await db.exec(`INSERT INTO strata.series (facility_id, measurement, field) SELECT f.id, 'machine', 'f' || s FROM strata.facilities f, generate_series(1, ${S}) s`);
  console.error(`loading ${F} facilities × ${S} series × ${days} days at ${step}-minute steps…`);
  await db.exec(
    `INSERT INTO strata.metrics (time, facility_id, series_id, value)
     SELECT t, s.facility_id, s.id, 20 + 5 * sin(extract(epoch FROM t) / 3600 + s.id)
       FROM generate_series(now() - interval '${days} days', now(), interval '${step} minutes') t, strata.series s`,
  );
  const rows = (await db.query<{ n: number }>('SELECT count(*)::int AS n FROM strata.metrics')).rows[0]!.n;
  console.error(`${rows.toLocaleString()} rows; compressing chunks older than 1 day…`);
  await db.exec(`SELECT compress_chunk(c) FROM show_chunks('strata.metrics', older_than => now() - interval '1 day') c`);
  // Materialize the hourly rollup (what its refresh policy keeps up to date on a server).
  await db.exec(`CALL refresh_continuous_aggregate('strata.metrics_hourly', NULL, date_trunc('hour', now()) - interval '1 hour')`);
  await db.exec('ANALYZE');
  const versions = await scratch.versions();
  const chunkInfo = (await db.query<{ n: number; c: number }>(`SELECT count(*)::int AS n, count(*) FILTER (WHERE is_compressed)::int AS c FROM timescaledb_information.chunks`)).rows[0]!;

  const readerUrl = new URL(direct);
  readerUrl.username = reader.role;
  readerUrl.password = reader.password;
  const asReader = new pg.Client({ connectionString: readerUrl.toString() });
  const asOwner = new pg.Client({ connectionString: direct.toString() });
  clients.push(asReader, asOwner);
  await asReader.connect();
  await asOwner.connect();
  await asOwner.query('SET ROLE strata_maintainer');

  // One fixed "now" for every run, so both sides read exactly the same rows.
  const now = (await db.query<{ t: string }>(`SELECT now()::text AS t`)).rows[0]!.t;
  const hourly = `date_trunc('hour', '${now}'::timestamptz) - interval '30 days'`;
  const daily = (from: string, filter: string) =>
    `SELECT time_bucket('1 day', time) AS day, avg(value), count(*) AS n FROM ${from} WHERE ${filter}time >= ${hourly} GROUP BY day ORDER BY day`;
  const queries: Record<string, { view: string; base: string }> = {
    'last hour, per series': {
      view: `SELECT series_id, avg(value), min(value), max(value), count(*) FROM strata.facility_metrics WHERE time > '${now}'::timestamptz - interval '1 hour' GROUP BY series_id ORDER BY series_id`,
      base: `SELECT series_id, avg(value), min(value), max(value), count(*) FROM strata.metrics WHERE facility_id = ${reader.id} AND time > '${now}'::timestamptz - interval '1 hour' GROUP BY series_id ORDER BY series_id`,
    },
    'last 30 days, daily, raw rows (facility_metrics)': { view: daily('strata.facility_metrics', ''), base: daily('strata.metrics', `facility_id = ${reader.id} AND `) },
    'last 30 days, daily, hourly rollup (facility_metrics_hourly)': {
      view: `SELECT time_bucket('1 day', bucket) AS day, sum(sum) / sum(samples) AS avg, sum(samples) AS n FROM strata.facility_metrics_hourly WHERE bucket >= ${hourly} GROUP BY day ORDER BY day`,
      base: daily('strata.metrics', `facility_id = ${reader.id} AND `),
    },
  };
  // Averages may differ in the last bits with the order rows are summed in; counts must not.
  const canonical = (rows: Record<string, unknown>[]) =>
    JSON.stringify(rows.map((r) => Object.fromEntries(Object.entries(r).map(([k, v]) => [k, typeof v === 'number' && !Number.isInteger(v) ? +v.toPrecision(10) : v]))));
  const results: { query: string; viewMs: number; baseMs: number; ratio: number }[] = [];
  for (const [name, q] of Object.entries(queries)) {
    const viewSql = q.view;
    const baseSql = q.base;
    const a = await asReader.query(viewSql);
    const b = await asOwner.query(baseSql);
    if (canonical(a.rows) !== canonical(b.rows)) throw new Error(`${name}: the view and the base table disagree`);
    const time = async (c: pg.Client, sql: string) => {
      const t0 = performance.now();
      await c.query(sql);
      return performance.now() - t0;
    };
    for (let i = 0; i < 3; i++) await Promise.all([time(asReader, viewSql), time(asOwner, baseSql)]);
    const v: number[] = [];
    const o: number[] = [];
    for (let i = 0; i < runs; i++) {
      // Alternate the order so neither side always runs on a warmer cache.
      if (i % 2 === 0) {
        v.push(await time(asReader, viewSql));
        o.push(await time(asOwner, baseSql));
      } else {
        o.push(await time(asOwner, baseSql));
        v.push(await time(asReader, viewSql));
      }
    }
    const r = { query: name, viewMs: +median(v).toFixed(2), baseMs: +median(o).toFixed(2), ratio: +(median(v) / median(o)).toFixed(2) };
    results.push(r);
    console.error(`${name}: view ${r.viewMs} ms, base ${r.baseMs} ms, ${r.ratio}×`);
  }
  const srv = new URL(values.url);
  const command = `npx tsx bench/facility-view.ts --url postgres://${srv.username}@${srv.host}/… --facilities ${F} --series ${S} --days ${days} --step-minutes ${step} --runs ${runs}`;
  console.log(
    writeTable(values.out, 'facility-view', command, versions, { rows, chunks: chunkInfo.n, compressedChunks: chunkInfo.c, facilities: F, seriesPerFacility: S, runs }, [
      '| query (one facility of ' + F + ') | through the view, as its reader (median ms) | base table, as owner (median ms) | view ÷ base |',
      '| --- | ---: | ---: | ---: |',
      ...results.map((r) => `| ${r.query} | ${r.viewMs} | ${r.baseMs} | ${r.ratio} |`),
    ], results),
  );
} finally {
  for (const c of clients) await c.end().catch(() => {});
  await scratch.drop(roles);
}
