// The two ingest modes (STRATA_INGEST_MODE) on the same rows, through the gateway's writer (ledger
// row + binary COPY per batch, several writers at once): rows/s, WAL and disk bytes per row, the
// reader's last-hour per-series read and 30-day aggregate, and exactness — every chunk's row count
// and checksum in the columnstore database equal the row store's after the load (with late rows,
// batches sent twice, and COPYs that failed and were retried), and again after tiering moved and
// recompressed the columnstore chunks.
//
//   npx tsx bench/ingest-modes.ts --url postgres://postgres@127.0.0.1:5432/postgres [--facilities 5]
//       [--series 200] [--hours 720] [--step-seconds 600] [--samples-per-copy 5] [--writers 4]
//
// The URL is a superuser connection to a TimescaleDB server (2.24 or later for the columnstore mode
// with the hourly rollup; the benchmark says which mode each database got). Two scratch databases are
// created and dropped, and warm and cold tablespaces for the tiering step (support/tablespaces.ts).
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { migrate } from '../src/db/migrate.ts';
import type { Db } from '../src/db/port.ts';
import { addFacility } from '../src/facilities/registry.ts';
import { BINARY_HEADER, BINARY_TRAILER, METRICS_COPY_BINARY, encodeTuples, type MetricRow } from '../src/ingest/copy-encode.ts';
import { COLUMNSTORE_SETTINGS, IngestModeGate, type IngestMode } from '../src/ingest/ingest-mode.ts';
import { createIngestMetrics } from '../src/ingest/metrics.ts';
import { Spool } from '../src/ingest/spool.ts';
import { Writer } from '../src/ingest/writer.ts';
import { silentLogger } from '../src/log.ts';
import { readChunks } from '../src/jobs/chunks.ts';
import { runTiering } from '../src/tiering/job.ts';
import { tierPolicy } from '../src/jobs/policy.ts';
import { diskBytesPerRow, walPosition } from './support/baselines.ts';
import { scratchDatabase, type Scratch } from './support/scratch.ts';
import { benchTablespaces } from './support/tablespaces.ts';
import { writeTable } from './support/table.ts';

const { values } = parseArgs({
  options: {
    url: { type: 'string' },
    facilities: { type: 'string', default: '5' },
    series: { type: 'string', default: '200' },
    hours: { type: 'string', default: '720' },
    'step-seconds': { type: 'string', default: '600' },
    'samples-per-copy': { type: 'string', default: '5' },
    writers: { type: 'string', default: '4' },
    out: { type: 'string', default: 'bench/results' },
  },
});
const [F, S, hours, step, perCopy, W] = [values.facilities, values.series, values.hours, values['step-seconds'], values['samples-per-copy'], values.writers].map(Number) as [number, number, number, number, number, number];
if (!values.url || ![F, S, hours, step, perCopy, W].every((n) => Number.isInteger(n) && n >= 1)) {
  console.error('usage: npx tsx bench/ingest-modes.ts --url <superuser URL of a TimescaleDB server> [--facilities 5] [--series 200] [--hours 720] [--step-seconds 600] [--samples-per-copy 5] [--writers 4] (whole numbers of at least 1)');
  process.exit(64);
}
const args = { url: values.url, out: values.out! };
const HOUR = 3_600_000;
const end = Math.floor(Date.now() / HOUR) * HOUR;
const start = end - hours * HOUR;
const samples = Math.floor((hours * 3600) / step);
const CHECKSUM = `count(*)::int AS n, md5(coalesce(string_agg(series_id || ':' || time::text || ':' || value::text, ',' ORDER BY time, series_id, value), '')) AS sum`;

interface Loaded {
  mode: IngestMode;
  fallback: string | null;
  rows: number;
  seconds: number;
  walBytesPerRow: number;
  diskBytesPerRow: number;
  duplicates: number;
  retried: number;
  lastHourMs: { p50: number; p95: number };
  aggregate30dMs: number;
  chunks: Record<string, { n: number; sum: string }>;
}

const value = (series: number, t: number) => Math.round((series * 10 + Math.sin(t / 3_600_000)) * 1e6) / 1e6;

/** Batches as the gateway makes them: one facility's series, `perCopy` samples each, in time order (late: 1 s after each sample). */
function* batches(ids: { facility: number; series: number[] }[], fromSample: number, toSample: number, late = false): Generator<MetricRow[]> {
  for (let s = fromSample; s < toSample; s += perCopy) {
    for (const f of ids) {
      const rows: MetricRow[] = [];
      for (let k = s; k < Math.min(s + perCopy, toSample); k++) {
        const t = start + k * step * 1000 + (late ? 1000 : 0);
        for (const id of f.series) rows.push({ timeUs: BigInt(t) * 1000n, facilityId: f.facility, seriesId: id, value: value(id, t) });
      }
      yield rows;
    }
  }
}

async function perChunk(db: Db): Promise<Record<string, { n: number; sum: string }>> {
  const out: Record<string, { n: number; sum: string }> = {};
  const chunks = (await db.query<{ c: string; r: Date }>(`SELECT format('%I.%I', chunk_schema, chunk_name) AS c, range_start AS r FROM timescaledb_information.chunks WHERE hypertable_name = 'metrics'`)).rows;
  for (const c of chunks) out[c.r.toISOString()] = (await db.query<{ n: number; sum: string }>(`SELECT ${CHECKSUM} FROM ${c.c}`)).rows[0]!;
  return out;
}

const pct = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(p * xs.length))]!;

async function load(scratch: Scratch, wanted: IngestMode): Promise<Loaded> {
  const db = scratch.db;
  await migrate(db, { chunkInterval: '1 hour' });
  const ids: { facility: number; series: number[] }[] = [];
  for (let f = 0; f < F; f++) {
    const fac = await addFacility(db, { code: `modes_${wanted}_${process.pid}_${f}`, region: 'bench' });
    roles.push(fac.facility.readerRole);
    const r = await db.query<{ id: number }>(`INSERT INTO strata.series (facility_id, measurement, field, tags) SELECT $1, 'sensor', 'value', jsonb_build_object('cell', 'c' || i) FROM generate_series(1, $2) i RETURNING id`, [fac.facility.id, S]);
    ids.push({ facility: fac.facility.id, series: r.rows.map((x) => x.id) });
  }
  const spoolDir = mkdtempSync(join(tmpdir(), 'strata-modes-spool-'));
  const spool = await Spool.open({ dir: spoolDir, maxBytes: 1 << 30 });
  const gate = new IngestModeGate(db, wanted);
  const writer = new Writer(db, spool, createIngestMetrics({ defaults: false }), silentLogger, { maxAttempts: 3, attemptTimeoutMs: 30_000, concurrency: W, mode: gate }, String);
  const mode = await gate.mode();
  const all = [...batches(ids, 0, samples), ...batches(ids.slice(0, 1), Math.floor(samples / 3), Math.floor(samples / 3) + 48, true)];
  let rows = 0;
  let duplicates = 0;
  let retried = 0;
  await db.exec('CHECKPOINT');
  const wal0 = await walPosition(db);
  const t0 = performance.now();
  let next = 0;
  await Promise.all(
    Array.from({ length: W }, async () => {
      while (next < all.length) {
        const i = next++;
        const batch = all[i]!;
        const id = randomUUID();
        const tuples = encodeTuples(batch);
        if (i % 97 === 0) {
          // A COPY that fails after its rows were sent (the transaction rolls back), then the retry.
          await db
            .transaction(async (tx) => {
              if (mode === 'columnstore') await tx.query(COLUMNSTORE_SETTINGS);
              await tx.query('INSERT INTO strata.ingest_ledger (batch_id, facility_id, row_count) VALUES ($1, $2, $3)', [id, batch[0]!.facilityId, batch.length]);
              await tx.copyIn(METRICS_COPY_BINARY, [BINARY_HEADER, tuples, BINARY_TRAILER]);
              throw new Error('drill: the COPY failed after its rows were sent');
            })
            .catch((err: Error) => {
              if (!/drill/.test(err.message)) throw err;
            });
          retried++;
        }
        await writer.commit(id, batch[0]!.facilityId, batch.length, [tuples]);
        if (i % 101 === 0 && (await writer.commit(id, batch[0]!.facilityId, batch.length, [tuples])) === 'duplicate') duplicates++;
        rows += batch.length;
      }
    }),
  );
  const seconds = (performance.now() - t0) / 1000;
  const wal = (await walPosition(db)) - wal0;
  await spool.close();
  rmSync(spoolDir, { recursive: true, force: true });
  await db.exec('ANALYZE strata.metrics');
  const lastHour: number[] = [];
  for (let q = 0; q < 200; q++) {
    const f = ids[q % F]!;
    const t = performance.now();
    await db.query(`SELECT time, value FROM strata.metrics WHERE facility_id = $1 AND series_id = $2 AND time > $3 ORDER BY time`, [f.facility, f.series[(q * 7) % S], new Date(end - HOUR)]);
    lastHour.push(performance.now() - t);
  }
  const agg: number[] = [];
  for (let round = 0; round < 3; round++) {
    const t = performance.now();
    for (const f of ids) await db.query(`SELECT series_id, time_bucket('1 day', time) AS day, avg(value), max(value), count(*) FROM strata.metrics WHERE facility_id = $1 AND time > $2 GROUP BY 1, 2`, [f.facility, new Date(end - 30 * 24 * HOUR)]);
    agg.push(performance.now() - t);
  }
  return {
    mode,
    fallback: gate.decision?.fallback ?? null,
    rows,
    seconds,
    walBytesPerRow: +(wal / rows).toFixed(1),
    diskBytesPerRow: await diskBytesPerRow(db, rows),
    duplicates,
    retried,
    lastHourMs: { p50: +pct(lastHour.slice(20), 0.5).toFixed(2), p95: +pct(lastHour.slice(20), 0.95).toFixed(2) },
    aggregate30dMs: +pct(agg, 0.5).toFixed(0),
    chunks: await perChunk(db),
  };
}

const results: Loaded[] = [];
/** Reader roles the facilities created: cluster-wide, dropped with the scratch databases. */
const roles: string[] = [];
const scratches: Scratch[] = [];
let spaces: Awaited<ReturnType<typeof benchTablespaces>> | null = null;
try {
  for (const mode of ['rowstore', 'columnstore'] as const) {
    const scratch = await scratchDatabase(args.url, `strata_modes_${mode}`, W + 1);
    scratches.push(scratch);
    process.stderr.write(`${mode}: loading ${(F * S * samples).toLocaleString()} rows …\n`);
    results.push(await load(scratch, mode));
    const { chunks: _, ...shown } = results.at(-1)!;
    process.stderr.write(`${mode}: ${JSON.stringify(shown)}\n`);
  }
  const [row, col] = results as [Loaded, Loaded];
  const same = (a: Loaded['chunks'], b: Loaded['chunks']) => Object.keys(a).length === Object.keys(b).length && Object.entries(a).every(([k, v]) => b[k]?.n === v.n && b[k]?.sum === v.sum);
  const identicalAfterLoad = same(row.chunks, col.chunks);
  // Tiering on the columnstore database: every chunk becomes warm (moved, recompressed); rows unchanged.
  const colDb = scratches[1]!.db;
  spaces = await benchTablespaces(colDb, args.url, 'modes');
  const space = spaces.warm;
  const t0 = performance.now();
  await runTiering(colDb, silentLogger, { policy: tierPolicy({ warmTablespace: space, coldTablespace: spaces.cold }), at: new Date(end + 60 * 24 * HOUR) });
  const tierSeconds = (performance.now() - t0) / 1000;
  const states = await readChunks(colDb);
  const warmAfter = states.filter((c) => c.tablespace === space && c.compressed && !c.unordered && !c.partial).length;
  const identicalAfterTiering = same(row.chunks, await perChunk(colDb));
  const recompressedBytesPerRow = await diskBytesPerRow(colDb, col.rows);
  const versions = await scratches[0]!.versions();
  const srv = new URL(args.url);
  const command = `npx tsx bench/ingest-modes.ts --url postgres://${srv.username}@${srv.host}/… --facilities ${F} --series ${S} --hours ${hours} --step-seconds ${step} --samples-per-copy ${perCopy} --writers ${W}`;
  const r = (x: number, y: number) => (y ? (x / y).toFixed(2) : '—');
  console.log(
    writeTable(args.out, `ingest-modes-${perCopy}-per-copy`, command, versions, { facilities: F, seriesPerFacility: S, hours, stepSeconds: step, samplesPerSeriesPerCopy: perCopy, rowsPerCopy: S * perCopy, writers: W, chunkInterval: '1 hour' }, [
      `Rows: ${F} facilities × ${S} series × ${samples.toLocaleString()} samples (${hours} h, one per ${step} s), plus late rows (one facility, 48 samples a third of the way in, 1 s after the originals) — COPYs of one facility's ${S} series × ${perCopy} samples (${(S * perCopy).toLocaleString()} rows), ${W} writers at once, each with its ledger row; every 97th batch first sent in a transaction that fails after its COPY, every 101st sent twice.`,
      '',
      '| mode asked | mode used | rows | rows/s | WAL bytes/row | bytes/row on disk | last-hour per-series read p50 / p95 ms | 30-day daily aggregate ms (all facilities) | sent twice → kept once | failed COPY then retried |',
      '| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
      ...results.map((x, i) => `| ${i === 0 ? 'rowstore' : 'columnstore'} | ${x.mode} | ${x.rows.toLocaleString()} | ${Math.round(x.rows / x.seconds).toLocaleString()} | ${x.walBytesPerRow} | ${x.diskBytesPerRow} | ${x.lastHourMs.p50} / ${x.lastHourMs.p95} | ${x.aggregate30dMs} | ${x.duplicates} | ${x.retried} |`),
      '',
      `Columnstore ÷ row store: rows/s ${r(col.rows / col.seconds, row.rows / row.seconds)}, WAL ${r(col.walBytesPerRow, row.walBytesPerRow)}, disk ${r(col.diskBytesPerRow, row.diskBytesPerRow)}, last-hour read p50 ${r(col.lastHourMs.p50, row.lastHourMs.p50)}, 30-day aggregate ${r(col.aggregate30dMs, row.aggregate30dMs)}.`,
      '',
      `Exactness: every chunk's row count and checksum (${Object.keys(row.chunks).length} chunks) identical in both databases after the load: **${identicalAfterLoad ? 'yes' : 'NO'}**; after tiering moved and recompressed the columnstore chunks (${warmAfter} of ${states.length} warm, ordered, not partial; ${tierSeconds.toFixed(1)} s): **${identicalAfterTiering ? 'yes' : 'NO'}**, ${recompressedBytesPerRow} bytes/row on disk then.${col.fallback ? ` Columnstore fell back: ${col.fallback}.` : ''}`,
    ], { results: results.map(({ chunks, ...x }) => x), identicalAfterLoad, identicalAfterTiering, warmAfter, chunks: states.length, tierSeconds, recompressedBytesPerRow }),
  );
  if (!identicalAfterLoad || !identicalAfterTiering) process.exitCode = 1;
} finally {
  for (const s of scratches) await s.drop(roles).catch(() => {});
  for (const problem of (await spaces?.drop()) ?? []) process.stderr.write(`${problem}\n`);
}
