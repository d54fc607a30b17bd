// COPY paths into strata.metrics, measured in one run on the same rows and server:
//   psql \copy (text, from a file: the single-stream baseline), and the database port's COPY in
//   text and binary (rows encoded by src/ingest/copy-encode.ts, one COPY per batch).
// Committed rows are counted in the database. Node CPU per row covers encoding and sending.
//
//   npx tsx bench/copy-paths.ts --url postgres://postgres@127.0.0.1:5432/postgres [--rows 2000000] [--batch 50000]
//
// The URL is a superuser connection to a TimescaleDB server; a scratch database is created and dropped.
import { execFile } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { parseArgs, promisify } from 'node:util';
import { migrate } from '../src/db/migrate.ts';
import type { Db } from '../src/db/port.ts';
import { METRICS_COPY_BINARY, METRICS_COPY_TEXT, encodeBinary, encodeText, type MetricRow } from '../src/ingest/copy-encode.ts';
import { scratchDatabase } from './support/scratch.ts';

const { values } = parseArgs({
  options: {
    url: { type: 'string' },
    rows: { type: 'string', default: '2000000' },
    batch: { type: 'string', default: '50000' },
    facilities: { type: 'string', default: '50' },
    series: { type: 'string', default: '1000' },
    repeat: { type: 'string', default: '2' },
    out: { type: 'string', default: 'bench/results' },
  },
});
if (!values.url) {
  console.error('usage: npx tsx bench/copy-paths.ts --url <superuser URL of a TimescaleDB server> [--rows N] [--batch N] [--repeat N]');
  process.exit(64);
}
const total = Number(values.rows);
const batch = Number(values.batch);
const F = Number(values.facilities);
const S = Number(values.series);
const repeat = Number(values.repeat);

function makeRows(): MetricRow[] {
  const rows: MetricRow[] = new Array(total);
  const start = BigInt(Date.UTC(2026, 10, 21, 10)) * 1000n;
  for (let i = 0; i < total; i++) {
    const tick = Math.floor(i / (F * S));
    const k = i % (F * S);
    const f = 1 + Math.floor(k / S);
    const s = 1 + (k % S);
    rows[i] = { timeUs: start + BigInt(tick) * 1_000_000n, facilityId: f, seriesId: (f - 1) * S + s, value: 20 + 5 * Math.sin((tick + s) / 60) };
  }
  return rows;
}

async function count(db: Db): Promise<number> {
  return (await db.query<{ n: number }>('SELECT count(*)::int AS n FROM strata.metrics')).rows[0]!.n;
}

interface Result {
  method: string;
  rowsPerSecond: number;
  seconds: number;
  committedRows: number;
  nodeCpuUsPerRow: number | null;
}

const server = new URL(values.url);
const scratch = await scratchDatabase(values.url, 'strata_bench', 1);
const db = scratch.db;
const dbUrl = scratch.url;
const results: Result[] = [];
const fileDir = join(tmpdir(), `strata-bench-${process.pid}`);
try {
  await migrate(db, { chunkInterval: '1 hour' });
  const versions = await scratch.versions();
  const rows = makeRows();
  mkdirSync(fileDir, { recursive: true });
  const file = join(fileDir, 'rows.tsv');
  writeFileSync(file, encodeText(rows));

  const methods: Record<string, () => Promise<number | null>> = {
    'psql \\copy (text file)': async () => {
      await promisify(execFile)('psql', [dbUrl, '-v', 'ON_ERROR_STOP=1', '-c', `\\copy strata.metrics (time, facility_id, series_id, value) FROM '${file}'`]);
      return null;
    },
    'port COPY text': async () => {
      const cpu = process.cpuUsage();
      for (let i = 0; i < rows.length; i += batch) await db.copyIn(METRICS_COPY_TEXT, [encodeText(rows.slice(i, i + batch))]);
      const used = process.cpuUsage(cpu);
      return (used.user + used.system) / rows.length;
    },
    'port COPY binary': async () => {
      const cpu = process.cpuUsage();
      for (let i = 0; i < rows.length; i += batch) await db.copyIn(METRICS_COPY_BINARY, [encodeBinary(rows.slice(i, i + batch))]);
      const used = process.cpuUsage(cpu);
      return (used.user + used.system) / rows.length;
    },
  };
  for (let round = 0; round < repeat; round++) {
    for (const [method, run] of Object.entries(methods)) {
      await db.exec('TRUNCATE strata.metrics');
      await db.exec('CHECKPOINT');
      const t0 = process.hrtime.bigint();
      const cpu = await run();
      const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
      const committed = await count(db);
      if (committed !== total) throw new Error(`${method}: ${committed} rows committed, expected ${total}`);
      results.push({ method, rowsPerSecond: Math.round(total / seconds), seconds: +seconds.toFixed(3), committedRows: committed, nodeCpuUsPerRow: cpu === null ? null : +cpu.toFixed(3) });
      console.error(`round ${round + 1}/${repeat} ${method}: ${Math.round(total / seconds).toLocaleString()} rows/s`);
    }
  }
  const best = new Map<string, Result>();
  for (const r of results) if (!best.has(r.method) || best.get(r.method)!.rowsPerSecond < r.rowsPerSecond) best.set(r.method, r);
  const baseline = best.get('psql \\copy (text file)')!.rowsPerSecond;
  const command = `npx tsx bench/copy-paths.ts --url postgres://${server.username}@${server.host}/… --rows ${total} --batch ${batch} --repeat ${repeat}`;
  const meta = {
    date: new Date().toISOString(),
    command,
    machine: { cpus: cpus().length, model: cpus()[0]?.model, memoryGiB: Math.round(totalmem() / 2 ** 30) },
    versions: { node: process.version, ...versions },
    configuration: { rows: total, batchRows: batch, facilities: F, seriesPerFacility: S, chunkInterval: '1 hour', indexes: 'time DESC; (facility_id, series_id, time DESC)' },
  };
  mkdirSync(values.out, { recursive: true });
  writeFileSync(join(values.out, 'copy-paths.json'), JSON.stringify({ ...meta, results }, null, 2) + '\n');
  const md = [
    '# COPY paths into strata.metrics',
    '',
    `Command: \`${command}\`  `,
    `Date: ${meta.date}; ${meta.machine.cpus} × ${meta.machine.model}, ${meta.machine.memoryGiB} GiB; Node ${meta.versions.node}, PostgreSQL ${meta.versions.postgres}, TimescaleDB ${meta.versions.timescaledb}  `,
    `Rows: ${total.toLocaleString()} narrow rows (${F} facilities × ${S} series), one COPY per ${batch.toLocaleString()} rows for the port paths; best of ${repeat} rounds; committed rows counted in the database.`,
    '',
    '| method | rows/s (best) | × psql \\copy | Node CPU µs/row | every round (rows/s) |',
    '| --- | ---: | ---: | ---: | --- |',
    ...[...best.values()].map((b) => {
      const all = results.filter((r) => r.method === b.method).map((r) => r.rowsPerSecond.toLocaleString()).join(', ');
      return `| ${b.method} | ${b.rowsPerSecond.toLocaleString()} | ${(b.rowsPerSecond / baseline).toFixed(2)} | ${b.nodeCpuUsPerRow ?? '—'} | ${all} |`;
    }),
    '',
  ].join('\n');
  writeFileSync(join(values.out, 'copy-paths.md'), md);
  console.log(md);
} finally {
  rmSync(fileDir, { recursive: true, force: true });
  await scratch.drop();
}
