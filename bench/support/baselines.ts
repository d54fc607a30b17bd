// Baselines on the same rows and target: psql \copy from a file (the single-stream limit), text and
// binary COPY through pg-copy-streams, postgres.js COPY, and multi-row INSERT. Each starts from an
// empty table and is checked to have committed every row.
import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import postgres from 'postgres';
import type { Db } from '../../src/db/port.ts';
import { METRICS_COPY_BINARY, METRICS_COPY_TEXT, encodeBinary, encodeText, type MetricRow } from '../../src/ingest/copy-encode.ts';

export interface BaselineResult {
  method: string;
  rows: number;
  rowsPerSecond: number;
  /** WAL the load wrote (the whole cluster's, so the benchmark's database should be alone on it) and the hypertable's bytes on disk, per row. */
  walBytesPerRow: number;
  diskBytesPerRow: number;
}

/** WAL position of the cluster, in bytes. */
export async function walPosition(db: Db): Promise<number> {
  return Number((await db.query<{ b: string }>(`SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::text AS b`)).rows[0]!.b);
}

/** The hypertable's bytes on disk (row store and compressed chunks), per row. */
export async function diskBytesPerRow(db: Db, rows: number): Promise<number> {
  const r = await db.query<{ b: number }>(`SELECT total_bytes::float8 AS b FROM hypertable_detailed_size('strata.metrics')`);
  return +((r.rows[0]?.b ?? 0) / rows).toFixed(1);
}

const BATCH = 5_000;

async function count(db: Db): Promise<number> {
  return (await db.query<{ n: number }>('SELECT count(*)::int AS n FROM strata.metrics')).rows[0]!.n;
}

/** Every row the table holds now, in insertion-independent order. */
export async function currentRows(db: Db): Promise<MetricRow[]> {
  const r = await db.query<{ us: string; f: number; s: number; v: number }>(
    `SELECT (extract(epoch FROM time) * 1000000)::bigint::text AS us, facility_id AS f, series_id AS s, value AS v FROM strata.metrics`,
  );
  return r.rows.map((x) => ({ timeUs: BigInt(x.us), facilityId: x.f, seriesId: x.s, value: x.v }));
}

/** Every baseline, or only `psql \copy` (the one the targets compare with) when `only` is 'psql'. */
export async function runBaselines(db: Db, url: string, rows: readonly MetricRow[], workDir: string, log: (line: string) => void, only?: 'psql'): Promise<BaselineResult[]> {
  const file = join(workDir, 'rows.tsv');
  writeFileSync(file, encodeText(rows));
  const chunks = <T>(f: (part: readonly MetricRow[]) => T): T[] => {
    const out: T[] = [];
    for (let i = 0; i < rows.length; i += BATCH) out.push(f(rows.slice(i, i + BATCH)));
    return out;
  };
  const methods: Record<string, () => Promise<void>> = {
    'psql \\copy (text file)': async () => void (await promisify(execFile)('psql', [url, '-v', 'ON_ERROR_STOP=1', '-c', `\\copy strata.metrics (time, facility_id, series_id, value) FROM '${file}'`])),
    'pg-copy-streams text COPY': async () => {
      for (const buf of chunks(encodeText)) await db.copyIn(METRICS_COPY_TEXT, [buf]);
    },
    'pg-copy-streams binary COPY': async () => {
      for (const buf of chunks(encodeBinary)) await db.copyIn(METRICS_COPY_BINARY, [buf]);
    },
    'postgres.js COPY (text)': async () => {
      const sql = postgres(url, { max: 1, onnotice: () => {} });
      try {
        for (const buf of chunks(encodeText)) {
          const w = await sql`COPY strata.metrics (time, facility_id, series_id, value) FROM STDIN`.writable();
          await new Promise<void>((resolve, reject) => {
            w.on('error', reject);
            w.on('finish', resolve);
            w.end(buf);
          });
        }
      } finally {
        await sql.end();
      }
    },
    'multi-row INSERT (1,000 rows per statement)': async () => {
      for (let i = 0; i < rows.length; i += 1_000) {
        const part = rows.slice(i, i + 1_000);
        const params: unknown[] = [];
        const tuples = part.map((r, k) => {
          params.push(new Date(Number(r.timeUs / 1000n)), r.facilityId, r.seriesId, r.value);
          return `($${k * 4 + 1}, $${k * 4 + 2}, $${k * 4 + 3}, $${k * 4 + 4})`;
        });
        await db.query(`INSERT INTO strata.metrics (time, facility_id, series_id, value) VALUES ${tuples.join(', ')}`, params);
      }
    },
  };
  const results: BaselineResult[] = [];
  for (const [method, run] of Object.entries(methods)) {
    if (only && !method.startsWith(only)) continue;
    await db.exec('TRUNCATE strata.metrics');
    await db.exec('CHECKPOINT');
    const wal0 = await walPosition(db);
    const t0 = performance.now();
    await run();
    const seconds = (performance.now() - t0) / 1000;
    const wal = (await walPosition(db)) - wal0;
    const n = await count(db);
    if (n !== rows.length) throw new Error(`${method}: ${n} of ${rows.length} rows committed`);
    results.push({ method, rows: n, rowsPerSecond: Math.round(n / seconds), walBytesPerRow: +(wal / n).toFixed(1), diskBytesPerRow: await diskBytesPerRow(db, n) });
    log(`baseline ${method}: ${Math.round(n / seconds).toLocaleString()} rows/s`);
  }
  return results;
}
