// The benchmark harness (`npm run bench -- …`, `strata bench …`): the DESIGN §1 workload as line
// protocol batches from concurrent keep-alive collectors → the gateway → PgBouncer → TimescaleDB,
// committed rows counted in the database, then baselines on the same rows and target.
//
//   npm run bench -- --url postgres://postgres@127.0.0.1:5432/postgres [--rows 2000000 | --duration 600]
//       [--facilities 50] [--series 1000] [--batch-lines 5000] [--clients 50] [--chunk-interval "1 hour"]
//       [--interval 10] [--gzip true] [--baselines true|false|psql] [--node-args "--cpu-prof"] [--out bench/results]
//       [--ingest-mode rowstore|columnstore]   STRATA_INGEST_MODE of the gateway (default: the gateway's)
//       [--rate <metrics/s>]   open loop: a fixed offered rate (ack latency at 80% of the maximum, overload)
//       [--fields 10]          fields per line (1: `sensor,line=L3,cell=C7 value=12.345 <time>`)
//       [--timestamps ns|ms]   timestamp precision (the precision parameter and the digits follow it)
//       [--gateway-only]       parse + encode only: the gateway acknowledges and discards the rows
//                              (STRATA_BENCH_DISCARD); acknowledged rows are counted, no baselines
//       [--prebuilt 0]         build this many request bodies before the measured phase and send them
//                              round robin (times repeat), so the generator's CPU competes less
//   npm run bench -- --embedded [--rows 200000]     PGlite-TimescaleDB in this process; small runs only
//                                                   (with --gateway-only: strata serve in its own process over PGlite in a directory)
//   npm run bench -- --testcontainers               timescale/timescaledb-ha through a Docker engine
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { migrate } from '../src/db/migrate.ts';
import { openDb } from '../src/db/open.ts';
import type { Db } from '../src/db/port.ts';
import { startGateway } from '../src/ingest/gateway.ts';
import { silentLogger } from '../src/log.ts';
import { runTiering } from '../src/tiering/job.ts';
import { tierPolicy } from '../src/jobs/policy.ts';
import { currentRows, diskBytesPerRow, runBaselines, walPosition, type BaselineResult } from './support/baselines.ts';
import { startBouncer } from './support/bouncer.ts';
import { benchFacilities } from './support/facilities.ts';
import { startGatewayProcess } from './support/gateway-process.ts';
import { drive, type LoadResult } from './support/load.ts';
import { tagSets, type Precision, type Workload } from './support/workload.ts';
import { scratchDatabase } from './support/scratch.ts';
import { writeTable } from './support/table.ts';
import { timescaleContainer } from './support/target.ts';

const { values } = parseArgs({
  options: {
    url: { type: 'string' },
    embedded: { type: 'boolean' },
    testcontainers: { type: 'boolean' },
    rows: { type: 'string' },
    duration: { type: 'string' },
    rate: { type: 'string' },
    facilities: { type: 'string', default: '50' },
    series: { type: 'string', default: '1000' },
    'batch-lines': { type: 'string', default: '5000' },
    clients: { type: 'string' },
    'chunk-interval': { type: 'string', default: '1 hour' },
    'ingest-mode': { type: 'string' },
    interval: { type: 'string', default: '10' },
    gzip: { type: 'string', default: 'true' },
    baselines: { type: 'string', default: 'true' },
    'node-args': { type: 'string', default: '' },
    out: { type: 'string', default: 'bench/results' },
    fields: { type: 'string', default: '10' },
    timestamps: { type: 'string', default: 'ns' },
    'gateway-only': { type: 'boolean', default: false },
    prebuilt: { type: 'string', default: '0' },
  },
});
const targets = [values.url, values.embedded, values.testcontainers].filter(Boolean).length;
if (targets !== 1) {
  console.error('usage: npm run bench -- (--url <superuser URL of a TimescaleDB server> | --embedded | --testcontainers) [--rows N | --duration seconds] [options]');
  process.exit(64);
}
const F = Number(values.facilities);
const fields = Number(values.fields);
const precision = values.timestamps as Precision;
const gatewayOnly = values['gateway-only'] === true;
const wrong = [
  !(Number.isInteger(F) && F >= 1) && `--facilities must be a whole number of at least 1 (got ${values.facilities})`,
  !(Number.isInteger(fields) && fields >= 1) && `--fields must be a whole number of at least 1 (got ${values.fields})`,
  precision !== 'ns' && precision !== 'ms' && `--timestamps must be ns or ms (got ${values.timestamps})`,
  values['ingest-mode'] !== undefined && !['rowstore', 'columnstore'].includes(values['ingest-mode']) && `--ingest-mode must be rowstore or columnstore (got ${values['ingest-mode']})`,
  !['true', 'false', 'psql'].includes(values.baselines) && `--baselines must be true, false or psql (got ${values.baselines})`,
  !(Number.isInteger(Number(values.prebuilt)) && Number(values.prebuilt) >= 0) && `--prebuilt must be a whole number of request bodies (got ${values.prebuilt})`,
].filter(Boolean);
if (wrong.length) {
  for (const w of wrong) console.error(w);
  process.exit(64);
}
const workload: Required<Workload> = { facilities: F, seriesPerFacility: Number(values.series), linesPerBatch: Number(values['batch-lines']), gzip: values.gzip !== 'false', fields, precision };
// One collector per facility, but at least 8 so a run with few facilities (one facility's whole fleet) still loads the gateway.
const clients = Number(values.clients ?? Math.max(F, 8));
const durationS = values.duration ? Number(values.duration) : undefined;
const rowsTarget = durationS ? undefined : Number(values.rows ?? (values.embedded ? 200_000 : 2_000_000));
const rate = values.rate ? Number(values.rate) : undefined;
const say = (line: string) => process.stderr.write(line + '\n');

async function setup(db: Db): Promise<string[]> {
  await migrate(db, { chunkInterval: values['chunk-interval'] });
  return benchFacilities(db, F, 'bench');
}


const work = mkdtempSync(join(tmpdir(), 'strata-bench-'));
let load: LoadResult;
let baselines: BaselineResult[] = [];
let versions: Record<string, string> = {};
let bytesPerRow = 0;
let walPerRow: number | null = null;
/** WAL of the warm-up (creating every series once), which walPerRow leaves out. */
let warmupWalBytes: number | null = null;
let chunkStates = '';
/** After the tiering job compacted the chunks written compressed (columnstore mode), as it does an hour after a chunk's end. */
let compacted: { bytesPerRow: number; walBytesPerRow: number; seconds: number; chunks: number; exact: boolean } | null = null;
let gatewayFigures: { cpuUsPerRow: number | null; peakRssMiB: number | null; where: string };
const command = `npm run bench -- ${process.argv.slice(2).join(' ').replace(/postgres(ql)?:\/\/[^ ]+/g, '<url>')}`;

const nodeArgs = values['node-args'].split(' ').filter(Boolean);
const driveOptions = { workload, clients, rowsTarget, durationS, intervalS: Number(values.interval), log: say, rate, prebuilt: Number(values.prebuilt) };
const perRow = (cpuSeconds: number | null, l: LoadResult) => (cpuSeconds === null ? null : +((cpuSeconds * 1e6) / countedRows(l)).toFixed(2));

/** `strata serve` in its own process over `dbUrl` (STRATA_BENCH_DISCARD in gateway-only mode), driven until the target; stopped either way. */
async function driveGatewayProcess(dbUrl: string, tokens: string[], count: (() => Promise<number>) | undefined, where: string, measuring?: () => Promise<void>): Promise<LoadResult> {
  const gw = await startGatewayProcess({
    STRATA_DATABASE_URL: dbUrl, STRATA_REGION: 'bench', STRATA_SPOOL_DIR: join(work, 'spool'), STRATA_SERIES_LIMIT: '1000000',
    ...(gatewayOnly ? { STRATA_BENCH_DISCARD: '1' } : {}),
    ...(values['ingest-mode'] ? { STRATA_INGEST_MODE: values['ingest-mode'] } : {}),
  }, nodeArgs);
  try {
    const l = await drive({ ...driveOptions, url: gw.url, tokens, count, cpu: () => gw.stat().cpuSeconds, ...(measuring ? { measuring } : {}) });
    gatewayFigures = { cpuUsPerRow: perRow(l.gatewayCpuSeconds, l), peakRssMiB: gw.stat().peakRssMiB, where };
    return l;
  } finally {
    await gw.stop();
  }
}

try {
  if (values.embedded && gatewayOnly) {
    // Nothing is written, so the gateway can run as `strata serve` in its own process (its CPU and RSS
    // alone, without the load generator) over PGlite in a directory, for the facilities and series.
    const dbUrl = `pglite:${join(work, 'pglite')}`;
    const db = await openDb(dbUrl);
    let tokens: string[];
    try {
      tokens = await setup(db);
      versions = await serverVersions(db);
    } finally {
      await db.close();
    }
    load = await driveGatewayProcess(dbUrl, tokens, undefined, 'strata serve, its own process, over PGlite in a directory (series catalog only; PGlite counts in the RSS)');
  } else if (values.embedded) {
    const db = await openDb('pglite:memory');
    try {
      const tokens = await setup(db);
      const gw = await startGateway(db, silentLogger, {
        region: 'bench', host: '127.0.0.1', port: 0, spoolDir: join(work, 'spool'), spoolMaxBytes: 1 << 30, maxQueueBytes: 256 << 20,
        maxBodyBytes: 64 << 20, batchRows: 20_000, batchAgeMs: 100, seriesLimit: 1_000_000, ledgerRetention: '2 days', defaultMetrics: false,
      });
      // CPU of this whole process after the warm-up (gateway, PGlite and the load generator).
      const cpuSeconds = () => {
        const u = process.cpuUsage();
        return (u.user + u.system) / 1e6;
      };
      load = await drive({ ...driveOptions, url: gw.url, tokens, count: () => countRows(db), cpu: cpuSeconds });
      gatewayFigures = { cpuUsPerRow: perRow(load.gatewayCpuSeconds, load), peakRssMiB: Math.round(process.resourceUsage().maxRSS / 1024), where: 'in-process with PGlite and the load generator' };
      await gw.stop();
      bytesPerRow = await diskBytesPerRow(db, load.committedRows);
      versions = await serverVersions(db);
    } finally {
      await db.close();
    }
  } else {
    const container = values.testcontainers ? await timescaleContainer(say) : null;
    const serverUrl = container?.url ?? values.url!;
    const scratch = await scratchDatabase(serverUrl, 'strata_bench');
    const db = scratch.db;
    const bouncer = await startBouncer(new URL(serverUrl), work);
    try {
      const tokens = await setup(db);
      versions = await scratch.versions();
      // WAL from the end of the warm-up: creating every series is a one-time cost, not a per-row one.
      const walStart = await walPosition(db);
      let wal0 = 0;
      load = await driveGatewayProcess(bouncer.url(scratch.name), tokens, gatewayOnly ? undefined : () => countRows(db), 'strata serve, its own process', async () => {
        wal0 = await walPosition(db);
      });
      if (!gatewayOnly) warmupWalBytes = wal0 - walStart;
      if (!gatewayOnly) {
        walPerRow = +(((await walPosition(db)) - wal0) / load.committedRows).toFixed(1);
        bytesPerRow = await diskBytesPerRow(db, load.committedRows);
        chunkStates = (await db.query<{ s: string }>(`SELECT string_agg(n || ' ' || s, ', ') AS s FROM (SELECT CASE WHEN NOT is_compressed THEN 'row store' ELSE 'compressed' END AS s, count(*) AS n FROM timescaledb_information.chunks WHERE hypertable_name = 'metrics' GROUP BY 1) x`)).rows[0]?.s ?? '';
        compacted = await compactHot(db, load.committedRows);
      }
      if (values.baselines !== 'false' && !gatewayOnly) baselines = await runBaselines(db, scratch.url, await currentRows(db), work, say, values.baselines === 'psql' ? 'psql' : undefined);
    } finally {
      await bouncer.stop();
      await scratch.drop();
      await container?.stop();
    }
  }
  const psql = baselines.find((b) => b.method.startsWith('psql'))?.rowsPerSecond;
  const ratio = (x: number) => (psql ? (x / psql).toFixed(2) : '—');
  const sets = tagSets(workload);
  const shape = fields === 1 ? '1 field per line (`sensor,line=…,cell=… value=…`)' : `${fields} fields per line`;
  const table = [
    ...(gatewayOnly ? ['**Gateway only: parse + encode, rows discarded** (STRATA_BENCH_DISCARD: acknowledged rows are counted; nothing is written to the database, so no baselines and no loss check).', ''] : []),
    `Workload: ${F} ${F === 1 ? 'facility' : 'facilities'} × ${(sets * fields).toLocaleString()} series (${sets.toLocaleString()} tag sets × ${shape}), precision ${precision}, ${workload.linesPerBatch}-line batches (${(workload.linesPerBatch * fields).toLocaleString()} metrics)${workload.gzip ? ', gzip' : ''}, ${clients} keep-alive collectors; gateway defaults (20,000 rows / 100 ms / 4 writers).`,
    '',
    ...(values['ingest-mode'] ? [`Ingest mode: STRATA_INGEST_MODE=${values['ingest-mode']}; chunks after the load: ${chunkStates || '—'}.`, ''] : []),
    ...(warmupWalBytes !== null ? [`WAL per row counts from the end of the warm-up: the warm-up itself (one line per tag set and facility, creating every series once) wrote ${(warmupWalBytes / 1e6).toFixed(1)} MB of WAL, not divided over the measured rows.`, ''] : []),
    ...(compacted
      ? [
          `Hot compaction (the tiering job an hour after a chunk's end, STRATA_TIER_HOT_COMPACT_AFTER): ${compacted.chunks} chunk${compacted.chunks === 1 ? '' : 's'} recompressed in place in ${compacted.seconds.toFixed(1)} s (row counts and checksums read before and after included), ${compacted.walBytesPerRow} WAL bytes/row; **${compacted.bytesPerRow} bytes/row on disk after it**; rows and checksums unchanged: ${compacted.exact ? 'yes' : '**no**'}.`,
          '',
        ]
      : []),
    '| method | fields/line | precision | rows | rows/s | × psql \\copy | WAL bytes/row | bytes/row on disk |',
    '| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |',
    gatewayOnly
      ? `| gateway only: parse + encode, rows discarded (HTTP → acknowledged) | ${fields} | ${precision} | ${load!.ackedRows.toLocaleString()} | ${load!.rowsPerSecond.toLocaleString()} | — |`
      : `| gateway end to end (HTTP → committed) | ${fields} | ${precision} | ${load!.committedRows.toLocaleString()} | ${load!.rowsPerSecond.toLocaleString()} | ${ratio(load!.rowsPerSecond)} | ${walPerRow ?? '—'} | ${bytesPerRow} |`,
    ...baselines.map((b) => `| ${b.method} (row store) | — | — | ${b.rows.toLocaleString()} | ${b.rowsPerSecond.toLocaleString()} | ${ratio(b.rowsPerSecond)} | ${b.walBytesPerRow} | ${b.diskBytesPerRow} |`),
    '',
    '| ack p50 ms | ack p99 ms | ack p99.9 ms | gateway CPU µs/metric | gateway peak RSS MiB | rows lost | bytes/row on disk |',
    '| ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
    `| ${load!.ack.p50} | ${load!.ack.p99} | ${load!.ack.p999} | ${gatewayFigures!.cpuUsPerRow ?? '—'} | ${gatewayFigures!.peakRssMiB ?? '—'} | ${gatewayOnly ? '— (discarded)' : load!.lostRows} | ${gatewayOnly ? '—' : bytesPerRow} |`,
    '',
    `Gateway figures: ${gatewayFigures!.where}. ${rate ? `Open loop at ${rate.toLocaleString()} metrics/s offered (${load!.late} batches left late, ${load!.retried} retried after 429/503). ` : `Closed loop (each collector waits for its answer). `}${gatewayOnly ? 'Acknowledged' : 'Committed'} rows/s per ${values.interval} s interval: ${load!.intervals.map((r) => r.toLocaleString()).join(', ')}.`,
  ];
  const name = `bench-${fields}f-${precision}${gatewayOnly ? '-gateway-only' : ''}${values['ingest-mode'] ? `-${values['ingest-mode']}` : ''}`;
  const target = values.embedded ? 'embedded PGlite' : values.testcontainers ? 'testcontainers' : 'url + PgBouncer (transaction)';
  console.log(writeTable(values.out, name, command, versions, { target, ...workload, clients, chunkInterval: values['chunk-interval'], gatewayOnly, prebuilt: Number(values.prebuilt), ingestMode: values['ingest-mode'] ?? 'gateway default' }, table, { load: load!, baselines, gateway: gatewayFigures!, bytesPerRow: gatewayOnly ? null : bytesPerRow, walBytesPerRow: walPerRow, warmupWalBytes, chunks: chunkStates, compacted }));
  if (compacted && !compacted.exact) {
    say('HOT COMPACTION CHANGED ROWS');
    process.exitCode = 1;
  }
  if (load!.lostRows !== 0) {
    say(`ROWS LOST: ${load!.lostRows}`);
    process.exitCode = 1;
  }
} finally {
  rmSync(work, { recursive: true, force: true });
}

/** The rows a run measured: committed in the database, or (gateway only) acknowledged. */
function countedRows(l: LoadResult): number {
  return Math.max(1, l.counted === 'committed' ? l.committedRows : l.ackedRows);
}

async function countRows(db: Db): Promise<number> {
  return (await db.query<{ n: number }>('SELECT count(*)::int AS n FROM strata.metrics')).rows[0]!.n;
}

async function serverVersions(db: Db): Promise<Record<string, string>> {
  const r = await db.query<{ v: string; t: string }>(`SELECT current_setting('server_version') AS v, (SELECT extversion FROM pg_extension WHERE extname = 'timescaledb') AS t`);
  return { postgres: r.rows[0]!.v, timescaledb: r.rows[0]!.t };
}

/**
 * Runs the tiering job at a clock an hour past the newest chunk's end, when every chunk written
 * compressed is due for compaction (and none is due for warm); null when no chunk is compressed.
 */
async function compactHot(db: Db, rows: number): Promise<typeof compacted> {
  const r = await db.query<{ end: Date | null; n: number }>(`SELECT max(range_end) AS end, count(*) FILTER (WHERE is_compressed)::int AS n FROM timescaledb_information.chunks WHERE hypertable_name = 'metrics'`);
  const { end, n } = r.rows[0]!;
  if (!end || n === 0) return null;
  const t0 = performance.now();
  const wal0 = await walPosition(db);
  const summary = await runTiering(db, silentLogger, { policy: tierPolicy({}), at: new Date(end.getTime() + 3_600_000) });
  const walBytesPerRow = +(((await walPosition(db)) - wal0) / rows).toFixed(1);
  return { bytesPerRow: await diskBytesPerRow(db, rows), walBytesPerRow, seconds: (performance.now() - t0) / 1000, chunks: summary.chunksDone, exact: summary.failures.length === 0 && summary.chunksDone === summary.chunksPlanned };
}
