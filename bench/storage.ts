// Storage per row, as `strata size` needs it: bytes per row on disk uncompressed (table and indexes),
// index bytes per row (the chunk-interval rule), compression ratio of the warm/cold codec settings,
// and WAL bytes per row written. Sensor-like rows: slowly varying floats, counters and booleans.
//
//   npx tsx bench/storage.ts --url postgres://postgres@127.0.0.1:5432/postgres [--facilities 20]
//       [--series 100] [--hours 12] [--step-seconds 10]
//
// The URL is a superuser connection to a TimescaleDB server; a scratch database is created and dropped.
import { migrate } from '../src/db/migrate.ts';
import { scratchDatabase } from './support/scratch.ts';
import { sensorBenchArgs, sensorFacilities, sensorRowsSql } from './support/sensor-rows.ts';
import { writeTable } from './support/table.ts';

const args = sensorBenchArgs('storage', 12);
const { facilities: F, series: S, hours, step } = args;

const scratch = await scratchDatabase(args.url, 'strata_storagebench', 1);
const db = scratch.db;
try {
  await migrate(db, { chunkInterval: '1 hour' });
  await sensorFacilities(db, F, S, 'storage_reader');
  const wal0 = (await db.query<{ l: string }>('SELECT pg_current_wal_lsn()::text AS l')).rows[0]!.l;
  await db.exec(sensorRowsSql({ hours, step }));
  const wal = (await db.query<{ b: number }>(`SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::pg_lsn)::float8 AS b`, [wal0])).rows[0]!.b;
  await db.exec('CHECKPOINT');
  await db.exec('VACUUM ANALYZE strata.metrics');
  const rows = (await db.query<{ n: number }>('SELECT count(*)::int AS n FROM strata.metrics')).rows[0]!.n;
  const before = (await db.query<{ table_bytes: number; index_bytes: number; total_bytes: number }>('SELECT table_bytes::float8, index_bytes::float8, total_bytes::float8 FROM hypertable_detailed_size($1)', ['strata.metrics'])).rows[0]!;
  await db.exec(`SELECT compress_chunk(c) FROM show_chunks('strata.metrics') c`);
  const stats = (await db.query<{ b: number; a: number }>('SELECT sum(before_compression_total_bytes)::float8 AS b, sum(after_compression_total_bytes)::float8 AS a FROM chunk_compression_stats($1)', ['strata.metrics'])).rows[0]!;
  const versions = await scratch.versions();
  const result = {
    rows,
    bytesPerRow: +(before.total_bytes / rows).toFixed(1),
    tableBytesPerRow: +(before.table_bytes / rows).toFixed(1),
    indexBytesPerRow: +(before.index_bytes / rows).toFixed(1),
    compressionRatio: +(stats.b / stats.a).toFixed(1),
    walBytesPerRow: +(wal / rows).toFixed(1),
  };
  const srv = new URL(args.url);
  const command = `npx tsx bench/storage.ts --url postgres://${srv.username}@${srv.host}/… --facilities ${F} --series ${S} --hours ${hours} --step-seconds ${step}`;
  console.log(
    writeTable(args.out, 'storage', command, versions, { facilities: F, seriesPerFacility: S, hours, stepSeconds: step, chunkInterval: '1 hour' }, [
      '| rows | bytes/row on disk (table + indexes) | table | indexes | compression ratio | WAL bytes/row |',
      '| ---: | ---: | ---: | ---: | ---: | ---: |',
      `| ${rows.toLocaleString()} | ${result.bytesPerRow} | ${result.tableBytesPerRow} | ${result.indexBytesPerRow} | ${result.compressionRatio}:1 | ${result.walBytesPerRow} |`,
    ], result),
  );
} finally {
  await scratch.drop();
}
