// The benchmark harness (`npm run bench -- …`, `strata bench …`): the DESIGN §1 workload as line
// protocol batches from concurrent keep-alive collectors → the gateway → PgBouncer → TimescaleDB,
// committed rows counted in the database, then baselines on the same rows and target.
//
//   npm run bench -- --url postgres://postgres@127.0.0.1:5432/postgres [--rows 2000000 | --duration 600]
//       [--facilities 50] [--series 1000] [--batch-lines 5000] [--clients 50] [--chunk-interval "1 hour"]
//       [--interval 10] [--gzip true] [--baselines true] [--node-args "--cpu-prof"] [--out bench/results]
//       [--rate <metrics/s>]   open loop: a fixed offered rate (ack latency at 80% of the maximum, overload)
//   npm run bench -- --embedded [--rows 200000]     PGlite-TimescaleDB in this process; small runs only
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
import { currentRows, runBaselines, type BaselineResult } from './support/baselines.ts';
import { startBouncer } from './support/bouncer.ts';
import { benchFacilities } from './support/facilities.ts';
import { startGatewayProcess } from './support/gateway-process.ts';
import { drive, type LoadResult } from './support/load.ts';
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
    interval: { type: 'string', default: '10' },
    gzip: { type: 'string', default: 'true' },
    baselines: { type: 'string', default: 'true' },
    'node-args': { type: 'string', default: '' },
    out: { type: 'string', default: 'bench/results' },
  },
});
const targets = [values.url, values.embedded, values.testcontainers].filter(Boolean).length;
if (targets !== 1) {
  console.error('usage: npm run bench -- (--url <superuser URL of a TimescaleDB server> | --embedded | --testcontainers) [--rows N | --duration seconds] [options]');
  process.exit(64);
}
const F = Number(values.facilities);
const workload = { facilities: F, seriesPerFacility: Number(values.series), linesPerBatch: Number(values['batch-lines']), gzip: values.gzip !== 'false' };
const clients = Number(values.clients ?? F);
const durationS = values.duration ? Number(values.duration) : undefined;
const rowsTarget = durationS ? undefined : Number(values.rows ?? (values.embedded ? 200_000 : 2_000_000));
const rate = values.rate ? Number(values.rate) : undefined;
const say = (line: string) => process.stderr.write(line + '\n');

async function setup(db: Db): Promise<string[]> {
  await migrate(db, { chunkInterval: values['chunk-interval'] });
  return benchFacilities(db, F, 'bench');
}

async function diskBytesPerRow(db: Db, rows: number): Promise<number> {
  const r = await db.query<{ b: number }>(`SELECT total_bytes::float8 AS b FROM hypertable_detailed_size('strata.metrics')`);
  return +((r.rows[0]?.b ?? 0) / rows).toFixed(1);
}

const work = mkdtempSync(join(tmpdir(), 'strata-bench-'));
let load: LoadResult;
let baselines: BaselineResult[] = [];
let versions: Record<string, string> = {};
let bytesPerRow = 0;
let gatewayFigures: { cpuUsPerRow: number | null; peakRssMiB: number | null; where: string };
const command = `npm run bench -- ${process.argv.slice(2).join(' ').replace(/postgres(ql)?:\/\/[^ ]+/g, '<url>')}`;

try {
  if (values.embedded) {
    const db = await openDb('pglite:memory');
    try {
      const tokens = await setup(db);
      const gw = await startGateway(db, silentLogger, {
        region: 'bench', host: '127.0.0.1', port: 0, spoolDir: join(work, 'spool'), spoolMaxBytes: 1 << 30, maxQueueBytes: 256 << 20,
        maxBodyBytes: 64 << 20, batchRows: 20_000, batchAgeMs: 100, seriesLimit: 1_000_000, ledgerRetention: '2 days', defaultMetrics: false,
      });
      const cpu0 = process.cpuUsage();
      load = await drive({ url: gw.url, tokens, workload, clients, rowsTarget, durationS, intervalS: Number(values.interval), count: () => countRows(db), log: say, rate });
      const used = process.cpuUsage(cpu0);
      gatewayFigures = { cpuUsPerRow: +((used.user + used.system) / load.committedRows).toFixed(2), peakRssMiB: Math.round(process.resourceUsage().maxRSS / 1024), where: 'in-process with PGlite and the load generator' };
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
      const nodeArgs = values['node-args'].split(' ').filter(Boolean);
      const gw = await startGatewayProcess({ STRATA_DATABASE_URL: bouncer.url(scratch.name), STRATA_REGION: 'bench', STRATA_SPOOL_DIR: join(work, 'spool'), STRATA_SERIES_LIMIT: '1000000' }, nodeArgs);
      load = await drive({ url: gw.url, tokens, workload, clients, rowsTarget, durationS, intervalS: Number(values.interval), count: () => countRows(db), log: say, cpu: () => gw.stat().cpuSeconds, rate });
      const stat = gw.stat();
      gatewayFigures = { cpuUsPerRow: load.gatewayCpuSeconds === null ? null : +((load.gatewayCpuSeconds * 1e6) / load.committedRows).toFixed(2), peakRssMiB: stat.peakRssMiB, where: 'strata serve, its own process' };
      await gw.stop();
      bytesPerRow = await diskBytesPerRow(db, load.committedRows);
      if (values.baselines !== 'false') baselines = await runBaselines(db, scratch.url, await currentRows(db), work, say);
    } finally {
      await bouncer.stop();
      await scratch.drop();
      await container?.stop();
    }
  }
  const psql = baselines.find((b) => b.method.startsWith('psql'))?.rowsPerSecond;
  const ratio = (x: number) => (psql ? (x / psql).toFixed(2) : '—');
  const table = [
    `Workload: ${F} facilities × ${workload.seriesPerFacility} series, ${workload.linesPerBatch}-line batches (${workload.linesPerBatch * 10} metrics)${workload.gzip ? ', gzip' : ''}, ${clients} keep-alive collectors; gateway defaults (20,000 rows / 100 ms / 4 writers).`,
    '',
    '| method | rows | rows/s | × psql \\copy |',
    '| --- | ---: | ---: | ---: |',
    `| gateway end to end (HTTP → committed) | ${load!.committedRows.toLocaleString()} | ${load!.rowsPerSecond.toLocaleString()} | ${ratio(load!.rowsPerSecond)} |`,
    ...baselines.map((b) => `| ${b.method} | ${b.rows.toLocaleString()} | ${b.rowsPerSecond.toLocaleString()} | ${ratio(b.rowsPerSecond)} |`),
    '',
    '| ack p50 ms | ack p99 ms | ack p99.9 ms | gateway CPU µs/metric | gateway peak RSS MiB | rows lost | bytes/row on disk |',
    '| ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
    `| ${load!.ack.p50} | ${load!.ack.p99} | ${load!.ack.p999} | ${gatewayFigures!.cpuUsPerRow ?? '—'} | ${gatewayFigures!.peakRssMiB ?? '—'} | ${load!.lostRows} | ${bytesPerRow} |`,
    '',
    `Gateway figures: ${gatewayFigures!.where}. ${rate ? `Open loop at ${rate.toLocaleString()} metrics/s offered (${load!.late} batches left late, ${load!.retried} retried after 429/503). ` : `Closed loop (each collector waits for its answer). `}Committed rows/s per ${values.interval} s interval: ${load!.intervals.map((r) => r.toLocaleString()).join(', ')}.`,
  ];
  console.log(writeTable(values.out, 'bench', command, versions, { target: values.embedded ? 'embedded PGlite' : values.testcontainers ? 'testcontainers' : 'url + PgBouncer (transaction)', ...workload, clients, chunkInterval: values['chunk-interval'] }, table, { load: load!, baselines, gateway: gatewayFigures!, bytesPerRow }));
  if (load!.lostRows !== 0) {
    say(`ROWS LOST: ${load!.lostRows}`);
    process.exitCode = 1;
  }
} finally {
  rmSync(work, { recursive: true, force: true });
}

async function countRows(db: Db): Promise<number> {
  return (await db.query<{ n: number }>('SELECT count(*)::int AS n FROM strata.metrics')).rows[0]!.n;
}

async function serverVersions(db: Db): Promise<Record<string, string>> {
  const r = await db.query<{ v: string; t: string }>(`SELECT current_setting('server_version') AS v, (SELECT extversion FROM pg_extension WHERE extname = 'timescaledb') AS t`);
  return { postgres: r.rows[0]!.v, timescaledb: r.rows[0]!.t };
}
