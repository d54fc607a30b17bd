// Does a tier run stall ingestion? The gateway (its own process, through PgBouncer) takes an open-loop
// load while `runTiering` moves and compresses old chunks on a direct connection. Measured from the
// database: the longest gap between consecutive committed ingest batches (strata.ingest_ledger) while
// the run works, against the longest gap in an equal stretch of the same load before it. Target: no
// stall over 1 s. With --cold, the old rows are 1-hour chunks in the cold tier, so the run also merges
// each day's chunks and recompresses them (results in tiering-stall-cold).
//
//   npx tsx bench/tiering-stall.ts --url postgres://postgres@127.0.0.1:5432/postgres [--rate 100000]
//       [--seconds 90] [--tier-after 20] [--old-days 40] [--old-series 20] [--cold]
//
// The URL is a superuser connection to a TimescaleDB server (tablespaces are created in local
// directories, so the server must be on this machine); a scratch database is created and dropped.
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { migrate } from '../src/db/migrate.ts';
import { openDb } from '../src/db/open.ts';
import { createLogger } from '../src/log.ts';
import { runTiering, type RunSummary } from '../src/tiering/job.ts';
import { tierPolicy } from '../src/jobs/policy.ts';
import { startBouncer } from './support/bouncer.ts';
import { benchFacilities } from './support/facilities.ts';
import { startGatewayProcess } from './support/gateway-process.ts';
import { drive, type LoadResult } from './support/load.ts';
import { scratchDatabase } from './support/scratch.ts';
import { benchTablespaces } from './support/tablespaces.ts';
import { writeTable } from './support/table.ts';

const { values } = parseArgs({
  options: {
    url: { type: 'string' },
    rate: { type: 'string', default: '100000' },
    seconds: { type: 'string', default: '90' },
    'tier-after': { type: 'string', default: '20' },
    'old-days': { type: 'string', default: '40' },
    'old-series': { type: 'string', default: '20' },
    facilities: { type: 'string', default: '10' },
    cold: { type: 'boolean', default: false },
    out: { type: 'string', default: 'bench/results' },
  },
});
if (!values.url) {
  console.error('usage: npx tsx bench/tiering-stall.ts --url <superuser URL of a local TimescaleDB server> [--rate N] [--seconds N]');
  process.exit(64);
}
const say = (line: string) => process.stderr.write(line + '\n');
const F = Number(values.facilities);
const seconds = Number(values.seconds);
const tierAfter = Number(values['tier-after']);
const command = `npx tsx bench/tiering-stall.ts ${process.argv.slice(2).join(' ').replace(/postgres(ql)?:\/\/[^ ]+/g, '<url>')}`;

const work = mkdtempSync(join(tmpdir(), 'strata-tierbench-'));
const scratch = await scratchDatabase(values.url, 'strata_tierbench');
const db = scratch.db;
let spaces: Awaited<ReturnType<typeof benchTablespaces>> | null = null;
const bouncer = await startBouncer(new URL(values.url), work);
try {
  await migrate(db, { chunkInterval: values.cold ? '1 hour' : '1 day' });
  spaces = await benchTablespaces(db, values.url, 'strata_bench');
  const policy = tierPolicy({ warmTablespace: spaces.warm, coldTablespace: spaces.cold });
  const tokens = await benchFacilities(db, F, 'tierbench');
  // Old data to tier: --old-days of 1-day chunks ending 31 days ago (warm), or with --cold of 1-hour
  // chunks ending 200 days ago (cold: merged per day), one sample per 10 s per series.
  const endsDaysAgo = values.cold ? 200 : 31;
  say(`loading ${values['old-days']} days of old data…`);
  await db.query(`INSERT INTO strata.series (facility_id, measurement, field) SELECT (SELECT min(id) FROM strata.facilities), 'old', 'f' || g FROM generate_series(1, $1::int) g`, [Number(values['old-series'])]);
  await db.query(
    `INSERT INTO strata.metrics (time, facility_id, series_id, value)
     SELECT t, s.facility_id, s.id, round((20 + 5 * sin(extract(epoch FROM t) / 3600 + s.id))::numeric, 2)
       FROM generate_series(date_trunc('day', now()) - make_interval(days => $2::int + $1::int), date_trunc('day', now()) - make_interval(days => $2::int) - interval '10 seconds', interval '10 seconds') t,
            strata.series s WHERE s.measurement = 'old'`,
    [Number(values['old-days']), endsDaysAgo],
  );
  const versions = await scratch.versions();
  const gw = await startGatewayProcess({ STRATA_DATABASE_URL: bouncer.url(scratch.name), STRATA_REGION: 'bench', STRATA_SPOOL_DIR: join(work, 'spool'), STRATA_SERIES_LIMIT: '1000000' });
  const tierDb = await openDb(scratch.url, { max: 1, applicationName: 'strata-tier-bench' });
  let summary: RunSummary | undefined;
  let tierStart = 0;
  let tierEnd = 0;
  const tiering = (async () => {
    await new Promise((r) => setTimeout(r, tierAfter * 1000));
    tierStart = Date.now();
    say('tier run starts');
    summary = await runTiering(tierDb, createLogger('warn', say), { policy });
    tierEnd = Date.now();
    say(`tier run finished in ${((tierEnd - tierStart) / 1000).toFixed(1)} s: ${summary.stepsDone} steps, ${summary.stepsFailed} failed`);
  })();
  const load: LoadResult = await drive({
    url: gw.url, tokens, workload: { facilities: F, seriesPerFacility: 1000, linesPerBatch: 1000, gzip: true }, clients: 4 * F,
    durationS: seconds, intervalS: 5, rate: Number(values.rate), log: say, cpu: () => gw.stat().cpuSeconds,
    count: async () => (await db.query<{ n: number }>(`SELECT coalesce(sum(row_count), 0)::int AS n FROM strata.ingest_ledger`)).rows[0]!.n,
  });
  await tiering;
  await gw.stop();
  await tierDb.close();
  const gap = async (from: number, to: number) =>
    (await db.query<{ g: number | null; n: number }>(
      `SELECT extract(epoch FROM max(d)) * 1000 AS g, count(*)::int AS n FROM (SELECT committed_at - lag(committed_at) OVER (ORDER BY committed_at) AS d FROM strata.ingest_ledger WHERE committed_at BETWEEN $1 AND $2) x`,
      [new Date(from), new Date(to)],
    )).rows[0]!;
  const during = await gap(tierStart, tierEnd);
  const span = tierEnd - tierStart;
  const before = await gap(Math.max(tierStart - span, tierStart - (tierAfter - 5) * 1000), tierStart);
  const s = summary!;
  const table = [
    `Load: ${F} facilities, 1,000-line gzip requests (10,000 metrics), open loop at ${Number(values.rate).toLocaleString('en-US')} metrics/s for ${seconds} s through PgBouncer; the tier run starts after ${tierAfter} s on a direct connection.`,
    `Tiered: ${s.chunksDone} chunks of ${values['old-series']} series × ${values['old-days']} days to ${values.cold ? 'cold, then ' + s.mergesDone + ' merges (each recompressed)' : 'warm'} (${s.stepsDone} steps, ${s.stepsFailed} failed), in ${((tierEnd - tierStart) / 1000).toFixed(1)} s.`,
    '',
    '| stretch | ingest batches committed | longest gap between batches (ms) |',
    '| --- | ---: | ---: |',
    `| before the tier run (same load) | ${before.n} | ${Math.round(before.g ?? 0)} |`,
    `| during the tier run | ${during.n} | ${Math.round(during.g ?? 0)} |`,
    '',
    `Whole run: ${load.committedRows.toLocaleString('en-US')} rows committed, ${load.lostRows} lost; ack p50/p99/p99.9 ${load.ack.p50}/${load.ack.p99}/${load.ack.p999} ms; committed rows/s per 5 s: ${load.intervals.map((x) => x.toLocaleString('en-US')).join(', ')}.`,
  ];
  console.log(writeTable(values.out!, values.cold ? 'tiering-stall-cold' : 'tiering-stall', command, versions, { rate: values.rate, seconds, tierAfter, oldDays: values['old-days'], oldSeries: values['old-series'], cold: values.cold }, table, { before, during, summary: s, load }));
} finally {
  await bouncer.stop();
  await scratch.drop();
  for (const problem of (await spaces?.drop()) ?? []) say(problem);
}
