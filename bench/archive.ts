// The archive on the storage benchmark's sensor rows: compressed 1-hour chunks archived by
// `strata archive run` (export in a snapshot, tar.gz, multipart upload, verify by reading back, drop)
// into a local S3 API server (s3rver over a temporary directory). Reports rows/s through the whole
// run and per step, and the object's bytes per row against the row store and the compressed chunks.
//
//   npx tsx bench/archive.ts --url postgres://postgres@127.0.0.1:5432/postgres [--facilities 20]
//       [--series 100] [--hours 4] [--step-seconds 10]
//
// The URL is a superuser connection to a TimescaleDB server; a scratch database is created and dropped.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { listEntries } from '../src/backup/archive/catalog.ts';
import { runArchive } from '../src/backup/archive/job.ts';
import { startLocalS3 } from '../src/backup/archive/local-s3.ts';
import { ArchiveStore } from '../src/backup/archive/s3.ts';
import { loadConfig } from '../src/config.ts';
import { migrate } from '../src/db/migrate.ts';
import { readJournal } from '../src/jobs/journal.ts';
import { silentLogger } from '../src/log.ts';
import { tierPolicy } from '../src/jobs/policy.ts';
import { scratchDatabase } from './support/scratch.ts';
import { sensorBenchArgs, sensorFacilities, sensorRowsSql } from './support/sensor-rows.ts';
import { writeTable } from './support/table.ts';

const args = sensorBenchArgs('archive', 4);
const { facilities: F, series: S, hours, step } = args;

const scratch = await scratchDatabase(args.url, 'strata_archivebench', 1);
const db = scratch.db;
const dir = mkdtempSync(join(tmpdir(), 'strata-archivebench-'));
const s3 = await startLocalS3({ ...loadConfig({ env: {} }), region: 'bench', archiveStorageClass: 'STANDARD', archiveWorkDir: dir }, join(dir, 's3'));
const store = new ArchiveStore(s3.settings);
try {
  await migrate(db, { chunkInterval: '1 hour' });
  await sensorFacilities(db, F, S, 'archive_reader');
  await db.exec(sensorRowsSql({ hours, step }));
  await db.exec('VACUUM ANALYZE strata.metrics');
  const rowStore = (await db.query<{ b: number; n: number }>(`SELECT (SELECT sum(pg_total_relation_size(c))::float8 FROM show_chunks('strata.metrics') c) AS b, (SELECT count(*)::int FROM strata.metrics) AS n`)).rows[0]!;
  await db.exec(`SELECT compress_chunk(c) FROM show_chunks('strata.metrics') c`);
  const compressed = (await db.query<{ b: number }>(`SELECT sum(pg_total_relation_size(c))::float8 + (SELECT sum(after_compression_total_bytes)::float8 FROM chunk_compression_stats('strata.metrics')) AS b FROM show_chunks('strata.metrics') c`)).rows[0]!.b;
  // As of two years after the data, every chunk is past the archive boundary.
  const t0 = performance.now();
  const run = await runArchive(db, store, silentLogger, { settings: s3.settings, policy: tierPolicy({}), at: new Date(Date.UTC(2028, 10, 20)) });
  const seconds = (performance.now() - t0) / 1000;
  if (run.failures.length) throw new Error(`archive run failed: ${JSON.stringify(run.failures)}`);
  const entries = await listEntries(db);
  const objectBytes = entries.reduce((n, e) => n + e.bytes!, 0);
  const steps: Record<string, number> = {};
  for (const j of await readJournal(db, { job: 'archive', runId: run.runId })) steps[j.step] = (steps[j.step] ?? 0) + Number(j.detail.seconds ?? 0);
  const left = (await db.query<{ n: number }>('SELECT count(*)::int AS n FROM strata.metrics')).rows[0]!.n;
  const results = {
    rows: rowStore.n, chunks: entries.length, rowsLeft: left, seconds: +seconds.toFixed(1), rowsPerSecond: Math.round(rowStore.n / seconds),
    stepSeconds: Object.fromEntries(Object.entries(steps).map(([k, v]) => [k, +v.toFixed(1)])),
    rowStoreBytesPerRow: +(rowStore.b / rowStore.n).toFixed(1), compressedBytesPerRow: +(compressed / rowStore.n).toFixed(2), bytesPerRow: +(objectBytes / rowStore.n).toFixed(2),
    objectBytes,
  };
  const srv = new URL(args.url);
  const command = `npx tsx bench/archive.ts --url postgres://${srv.username}@${srv.host}${srv.pathname} --facilities ${F} --series ${S} --hours ${hours} --step-seconds ${step}`;
  console.log(
    writeTable(args.out, 'archive', command, await scratch.versions(), { facilities: F, seriesPerFacility: S, hours, stepSeconds: step, chunkInterval: '1 hour', storageClass: 'STANDARD', s3: 's3rver on loopback' }, [
      '| rows | chunks | run (s) | rows/s | export-upload (s) | verify (s) | drop (s) | bytes/row: row store | compressed chunks | archive object (tar.gz) |',
      '| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
      `| ${results.rows.toLocaleString('en-US')} | ${results.chunks} | ${results.seconds} | ${results.rowsPerSecond.toLocaleString('en-US')} | ${steps['export-upload']?.toFixed(1)} | ${steps.verify?.toFixed(1)} | ${steps.drop?.toFixed(1)} | ${results.rowStoreBytesPerRow} | ${results.compressedBytesPerRow} | ${results.bytesPerRow} |`,
      '',
      `Every chunk was archived and dropped (${results.rowsLeft} rows left in the hypertable). s3rver returns no checksums, so verify read each object back`,
      'and hashed it; against S3 it compares the SHA-256 checksum instead. 2 cores shared by TimescaleDB, s3rver and the archive job.',
    ], results),
  );
} finally {
  store.close();
  await s3.stop();
  await scratch.drop();
  rmSync(dir, { recursive: true, force: true });
}
