// Compression ratio of candidate settings for cold chunks: each variant gets its own scratch database,
// the storage benchmark's sensor rows (floats with 2 decimals, counters, booleans), its segmentby/orderby
// set before the load, then every chunk compressed; ratio = chunk_compression_stats before ÷ after.
// Each variant also times a per-series read (one series, one hour, compressed chunks), median of --runs.
//
//   npx tsx bench/compression.ts --url postgres://postgres@127.0.0.1:5432/postgres [--facilities 20]
//       [--series 100] [--hours 12] [--step-seconds 10] [--runs 20] [--variants 1,2,…]
//
// The URL is a superuser connection to a TimescaleDB server; scratch databases are created and dropped.
import { performance } from 'node:perf_hooks';
import { migrate } from '../src/db/migrate.ts';
import type { Db } from '../src/db/port.ts';
import { silentLogger } from '../src/log.ts';
import { runTiering } from '../src/tiering/job.ts';
import { tierPolicy } from '../src/jobs/policy.ts';
import { scratchDatabase } from './support/scratch.ts';
import { benchTablespaces } from './support/tablespaces.ts';
import { sensorBenchArgs, sensorFacilities, sensorRowsSql } from './support/sensor-rows.ts';
import { writeTable } from './support/table.ts';

interface Variant {
  id: number;
  segmentby: string;
  orderby: string;
  /** Extra hypertable options (ALTER TABLE … SET), e.g. compress_chunk_time_interval. */
  options?: Record<string, string>;
  /** Session settings while compressing. */
  gucs?: Record<string, string>;
  /** After the compression: 1% late rows then compress_chunk again; merge_chunks of all chunks; then decompress and compress. */
  then?: ('late' | 'merge' | 'recompress')[];
  /** Instead of compressing here: `strata tier run` (runTiering) as of 200 days after the data, so every chunk is cold. */
  tiering?: boolean;
  note: string;
}
const CURRENT = { segmentby: 'facility_id, series_id', orderby: 'time' };
const VARIANTS: Variant[] = [
  { id: 1, ...CURRENT, note: 'current (sql/0003)' },
  { id: 2, segmentby: 'facility_id, series_id', orderby: 'time DESC', note: 'time DESC' },
  { id: 3, segmentby: 'facility_id', orderby: 'series_id, time', note: 'segment by facility' },
  { id: 4, segmentby: 'series_id', orderby: 'time', note: 'segment by series only' },
  { id: 5, segmentby: '', orderby: 'facility_id, series_id, time', note: 'no segmentby' },
  { id: 6, ...CURRENT, then: ['late'], note: 'current, +1% late rows, compress_chunk again' },
  { id: 7, ...CURRENT, options: { compress_chunk_time_interval: '12 hours' }, note: 'current, compress_chunk_time_interval 12 hours (roll-up)' },
  { id: 8, ...CURRENT, then: ['merge'], note: 'current, compressed 1-hour chunks merged (merge_chunks) into one' },
  { id: 9, ...CURRENT, then: ['merge', 'recompress'], note: 'as 8, merged chunk decompressed and compressed again' },
  { id: 10, ...CURRENT, then: ['merge', 'recompress'], gucs: { 'timescaledb.compression_batch_size_limit': '32767' }, note: 'as 9, compression_batch_size_limit 32767' },
  { id: 11, ...CURRENT, gucs: { 'timescaledb.auto_sparse_indexes': 'off', 'timescaledb.enable_sparse_index_bloom': 'off' }, note: 'current, automatic sparse indexes off' },
  { id: 12, ...CURRENT, tiering: true, note: 'strata tier run to cold: move, compress, merge per day, recompress with the largest batch' },
];

const args = sensorBenchArgs('compression', 12, { runs: '20', variants: VARIANTS.map((v) => v.id).join(',') });
const { facilities: F, series: S, hours, step } = args;
const runs = Number(args.extra.runs);
const variants = args.extra.variants!;
const chosen = variants.split(',').map((x) => VARIANTS.find((v) => v.id === Number(x)) ?? (console.error(`no variant ${x}`), process.exit(64)));
const rowsSql = (every: number, offset: number) => sensorRowsSql({ hours, step, every, offset });

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const one = async <R>(db: Db, sql: string) => (await db.query<R>(sql)).rows[0]!;
// The compressed chunk (cc) of each chunk (c) of strata.metrics.
const COMPRESSED = `_timescaledb_catalog.chunk c JOIN _timescaledb_catalog.chunk cc ON cc.id = c.compressed_chunk_id
  JOIN _timescaledb_catalog.hypertable h ON h.id = c.hypertable_id WHERE h.schema_name = 'strata' AND h.table_name = 'metrics'`;
const sizes = (db: Db) =>
  one<{ rows: number; chunks: number; batches: number; statsBefore: number; statsAfter: number; compressedBytes: number; chunkStatus: number[]; hypertableBytes: number }>(db, `
    SELECT (SELECT count(*)::int FROM strata.metrics) AS rows,
           (SELECT count(*)::int FROM show_chunks('strata.metrics')) AS chunks,
           (SELECT sum(numrows_post_compression)::int FROM _timescaledb_catalog.compression_chunk_size) AS "batches",
           (SELECT sum(before_compression_total_bytes)::float8 FROM chunk_compression_stats('strata.metrics')) AS "statsBefore",
           (SELECT sum(after_compression_total_bytes)::float8 FROM chunk_compression_stats('strata.metrics')) AS "statsAfter",
           (SELECT sum(pg_total_relation_size(format('%I.%I', cc.schema_name, cc.table_name)))::float8 FROM ${COMPRESSED}) AS "compressedBytes",
           (SELECT array_agg(DISTINCT c.status) FROM ${COMPRESSED}) AS "chunkStatus",
           (SELECT total_bytes::float8 FROM hypertable_detailed_size('strata.metrics')) AS "hypertableBytes"`);
const CHUNKS = `SELECT format('%I.%I', chunk_schema, chunk_name)::regclass FROM timescaledb_information.chunks
  WHERE hypertable_schema = 'strata' AND hypertable_name = 'metrics' ORDER BY range_start`;
const compressAll = (db: Db, v: Variant) =>
  db.exec(`${Object.entries(v.gucs ?? {}).map(([k, x]) => `SET ${k} = '${x}';`).join(' ')}
    SELECT compress_chunk(c) FROM (${CHUNKS}) x(c);
    RESET ALL;`);

async function perSeriesRead(db: Db): Promise<number> {
  const series = (await db.query<{ id: number; f: number }>('SELECT id, facility_id AS f FROM strata.series ORDER BY id')).rows;
  // 20 (series, hour) pairs spread over the data; each window starts 20 minutes past the hour, so it spans two 1-hour chunks.
  const picks = Array.from({ length: 20 }, (_, i) => ({ s: series[(i * 97) % series.length]!, h: i % Math.max(1, hours - 1) }));
  const read = (p: (typeof picks)[number]) =>
    db.query(`SELECT avg(value) FROM strata.metrics WHERE facility_id = $1 AND series_id = $2 AND time >= $3::timestamptz AND time < $3::timestamptz + interval '1 hour'`,
      [p.s.f, p.s.id, new Date(Date.UTC(2026, 10, 20, p.h, 20)).toISOString()]);
  for (const p of picks) await read(p); // warm the cache
  const ms: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    await read(picks[i % picks.length]!);
    ms.push(performance.now() - t0);
  }
  return +median(ms).toFixed(2);
}

const results: Record<string, unknown>[] = [];
let versions: Record<string, string> = {};
for (const v of chosen) {
  const t0 = performance.now();
  const scratch = await scratchDatabase(args.url, `strata_compressbench_${v.id}`, 1);
  const db = scratch.db;
  let spaces: Awaited<ReturnType<typeof benchTablespaces>> | null = null;
  try {
    await migrate(db, { chunkInterval: '1 hour' });
    // The hourly rollup's refresh job would run in the background during the measurement.
    await db.exec(`SELECT alter_job(job_id, scheduled => false) FROM timescaledb_information.jobs WHERE proc_name = 'policy_refresh_continuous_aggregate'`);
    const opts = { compress_segmentby: v.segmentby, compress_orderby: v.orderby, ...v.options };
    await db.exec(`ALTER TABLE strata.metrics SET (${Object.entries(opts).map(([k, x]) => `timescaledb.${k} = '${x}'`).join(', ')})`);
    await sensorFacilities(db, F, S, 'compress_reader');
    await db.exec(rowsSql(1, 0));
    await db.exec('VACUUM ANALYZE strata.metrics');
    const uncompressed = await one<{ b: number; n: number }>(db, `SELECT (SELECT total_bytes::float8 FROM hypertable_detailed_size('strata.metrics')) AS b, (SELECT count(*)::int FROM strata.metrics) AS n`);
    // The loaded chunks' size (heap, indexes, toast), the "before" of the tiering variant.
    const loaded = await one<{ b: number }>(db, `SELECT sum(pg_total_relation_size(c))::float8 AS b FROM (${CHUNKS}) x(c)`);
    if (v.tiering) {
      spaces = await benchTablespaces(db, args.url, 'strata_compressbench');
      const run = await runTiering(db, silentLogger, { policy: tierPolicy({ warmTablespace: spaces.warm, coldTablespace: spaces.cold }), at: new Date(Date.UTC(2027, 5, 8)) });
      if (run.failures.length) throw new Error(`tier run failed: ${JSON.stringify(run.failures)}`);
    } else await compressAll(db, v);
    const first = await sizes(db);
    const result: Record<string, unknown> = { variant: v.id, note: v.note, segmentby: v.segmentby, orderby: v.orderby, options: v.options ?? {}, gucs: v.gucs ?? {} };
    for (const step of v.then ?? []) {
      if (step === 'late') {
        // 1% late rows: every series gets a sample 5 s after every 100th one, in every (compressed) chunk.
        result.firstCompression = first;
        const tables = (await db.query<{ t: string }>(`SELECT format('%I.%I', cc.schema_name, cc.table_name) AS t FROM ${COMPRESSED}`)).rows.map((r) => r.t).join(', ');
        await db.exec(`VACUUM FULL ${tables}`); // the same compaction as after the recompression below, for comparison
        result.firstCompressionVacuumFull = await sizes(db);
        await db.exec(rowsSql(100, 5));
        result.withLateRowsUncompressed = await sizes(db);
        await compressAll(db, v); // recompresses a partially compressed chunk (segment-wise)
        // The replaced batches stay in the compressed chunks as dead tuples until VACUUM; VACUUM FULL gives the live size.
        result.afterRecompression = await sizes(db);
        await db.exec(`VACUUM ${tables}`);
        result.afterVacuum = await sizes(db);
        await db.exec(`VACUUM FULL ${tables}`);
      } else if (step === 'merge') {
        const names = (await db.query<{ c: string }>(`SELECT c::text AS c FROM (${CHUNKS}) x(c)`)).rows.map((r) => `'${r.c}'`);
        await db.exec(`CALL merge_chunks(ARRAY[${names.join(', ')}]::regclass[])`);
      } else {
        await db.exec(`SELECT decompress_chunk(c) FROM (${CHUNKS}) x(c)`);
        await compressAll(db, v);
      }
    }
    await db.exec('ANALYZE strata.metrics');
    const z = await sizes(db);
    // "before" is chunk_compression_stats' figure at the first compression (the loaded chunks); "after" is measured (the compressed chunks' total size),
    // because chunk_compression_stats is not updated when a chunk is recompressed (statsRatio keeps its figure).
    // the late rows' share is estimated pro rata; chunk_compression_stats has no figure of the load for merged chunks
    const before = v.tiering ? loaded.b : (first.statsBefore * z.rows) / uncompressed.n;
    Object.assign(result, {
      ...z,
      bytesBefore: before,
      bytesAfter: z.compressedBytes,
      loadedChunkBytes: loaded.b,
      ratio: +(before / z.compressedBytes).toFixed(1),
      statsRatio: +(z.statsBefore / z.statsAfter).toFixed(1),
      // Whole hypertable on disk: after the uncompressed load (VACUUMed) ÷ after compression (includes emptied chunk tables).
      onDiskRatio: +((uncompressed.b * z.rows) / uncompressed.n / z.hypertableBytes).toFixed(1),
      readMedianMs: await perSeriesRead(db),
      seconds: +((performance.now() - t0) / 1000).toFixed(0),
    });
    versions = await scratch.versions();
    results.push(result);
    console.error(JSON.stringify(result));
  } catch (err) {
    results.push({ variant: v.id, note: v.note, segmentby: v.segmentby, orderby: v.orderby, error: (err as Error).message });
    console.error(`variant ${v.id} failed: ${(err as Error).message}`);
  } finally {
    await scratch.drop();
    for (const problem of (await spaces?.drop()) ?? []) console.error(problem);
  }
}

const srv = new URL(args.url);
const command = `npx tsx bench/compression.ts --url postgres://${srv.username}@${srv.host}${srv.pathname} --facilities ${F} --series ${S} --hours ${hours} --step-seconds ${step} --runs ${runs} --variants ${variants}`;
const mib = (b: unknown) => (typeof b === 'number' ? `${(b / 2 ** 20).toFixed(1)} MiB` : '–');
const before = (r: Record<string, unknown>) => r.bytesBefore as number;
const current = results.find((r) => r.variant === 1 && typeof r.ratio === 'number')?.ratio as number | undefined;
console.log(
  writeTable(args.out, 'compression', command, versions, { facilities: F, seriesPerFacility: S, hours, stepSeconds: step, chunkInterval: '1 hour', readRuns: runs }, [
    '| # | variant | segmentby | orderby | bytes before | bytes after | ratio | vs. current | ≥ 10:1 warm / ≥ 15:1 cold | whole hypertable on disk | per-series 1 h read, median ms |',
    '| ---: | --- | --- | --- | ---: | ---: | ---: | ---: | --- | ---: | ---: |',
    ...results.map((r) => {
      const ratio = r.ratio as number | undefined;
      if (ratio === undefined) return `| ${r.variant} | ${r.note} | ${r.segmentby || '(none)'} | ${r.orderby} | – | – | failed: ${String(r.error)} | – | – | – | – |`;
      const stats = r.statsRatio !== ratio ? ` (chunk_compression_stats: ${(r.statsRatio as number).toFixed(1)}:1)` : '';
      const at = (k: string) => `${((before(r) * (r[k] as { rows: number }).rows) / (r.rows as number) / (r[k] as { compressedBytes: number }).compressedBytes).toFixed(1)}:1`;
      const bloat = r.afterRecompression ? ` after VACUUM FULL; ${at('afterRecompression')} as compress_chunk left it; first compression after VACUUM FULL: ${at('firstCompressionVacuumFull')}` : '';
      return `| ${r.variant} | ${r.note} | ${r.segmentby || '(none)'} | ${r.orderby} | ${mib(r.bytesBefore)} | ${mib(r.bytesAfter)} | ${ratio.toFixed(1)}:1${stats}${bloat} | ${current ? `${(ratio / current).toFixed(2)}×` : '–'} | ${ratio >= 10 ? 'yes' : 'no'} / ${ratio >= 15 ? 'yes' : 'no'} | ${(r.onDiskRatio as number).toFixed(1)}:1 | ${String(r.readMedianMs)} |`;
    }),
    '',
    '"bytes before": chunk_compression_stats\' before_compression_total_bytes at the first compression, i.e. table + indexes of the loaded',
    'chunks (for 6 scaled by rows to include the late rows). "bytes after": the compressed chunks\' total size (pg_total_relation_size).',
    'Where chunk_compression_stats disagrees it is shown in brackets: it is not updated by recompression (6) or merge_chunks (8), and for',
    '9 and 10 its "before" is the decompressed merged chunk (heap + indexes rebuilt by decompress_chunk), not the load. For 6, the late rows',
    '(1%: one sample 5 s after every 100th, in every series and chunk) touch every segment, so segment-wise recompression rewrites every batch;',
    'its ratio is measured after VACUUM FULL of the compressed chunks, compared with the first compression after the same VACUUM FULL, and also',
    'shown as compress_chunk left it (replaced batches stay as dead tuples until VACUUM, and plain VACUUM does not shrink the files).',
    'For 12 (the tiering job), "bytes before" is the loaded chunks\' total size (pg_total_relation_size), as chunk_compression_stats has no',
    'figure of the load for a merged chunk; the other variants\' loadedChunkBytes in the JSON give the same measure for comparison.',
    '"whole hypertable on disk": hypertable_detailed_size after the load ÷ after compression, including the emptied chunk tables and indexes.',
    'Read: `SELECT avg(value) FROM strata.metrics WHERE facility_id = $1 AND series_id = $2 AND time >= $3 AND time < $3 + 1 hour`, windows',
    `starting 20 minutes past the hour (two 1-hour chunks), 20 (series, hour) pairs, median of ${runs} runs after one warm-up pass.`,
  ], results),
);
