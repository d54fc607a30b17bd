// Export of one chunk's rows in a REPEATABLE READ snapshot: the rows as CSV (header
// time,facility_id,series_id,value; times in UTC ISO 8601 with microseconds; values with the
// shortest text that reads back exactly), ordered by facility, series and time, so the same rows
// always give the same bytes. The same snapshot gives the rows per facility, the min/max time,
// the facilities' regions (checked against the archive's region) and the table's DDL.
import { createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Db, Queryable } from '../../db/port.ts';
import type { Manifest } from './types.ts';
import { STRATA_VERSION } from '../../version.ts';

export const COLUMNS = ['time', 'facility_id', 'series_id', 'value'];

export interface Exported {
  manifest: Manifest;
  /** Regions of the facilities with rows in the chunk. */
  regions: string[];
}

const lit = (d: Date) => `'${d.toISOString()}'::timestamptz`;

/** The hypertable's CREATE TABLE, from the catalog. */
export async function tableDdl(db: Queryable, hypertable: string): Promise<string> {
  const r = await db.query<{ col: string }>(
    `SELECT format('%I %s%s', attname, format_type(atttypid, atttypmod), CASE WHEN attnotnull THEN ' NOT NULL' ELSE '' END) AS col
       FROM pg_attribute WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum`,
    [hypertable],
  );
  return `CREATE TABLE ${hypertable} (\n  ${r.rows.map((x) => x.col).join(',\n  ')}\n);`;
}

/** Writes the chunk's rows to `file`; resolves with the manifest of what was written. */
export async function exportChunk(db: Db, o: { hypertable: string; region: string; rangeStart: Date; rangeEnd: Date; file: string; onProgress?: (bytes: number) => void }): Promise<Exported> {
  return db.transaction(async (tx) => {
    await tx.exec(`SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY; SET LOCAL timezone = 'UTC'; SET LOCAL DateStyle = 'ISO, YMD'; SET LOCAL extra_float_digits = 1`);
    const within = (col: string) => `${col} >= ${lit(o.rangeStart)} AND ${col} < ${lit(o.rangeEnd)}`;
    const per = await tx.query<{ facility_id: number; region: string | null; n: number | string; lo: string; hi: string }>(
      `SELECT m.facility_id, f.region, count(*) AS n, min(m.time)::text AS lo, max(m.time)::text AS hi
         FROM ${o.hypertable} m LEFT JOIN strata.facilities f ON f.id = m.facility_id
        WHERE ${within('m.time')} GROUP BY m.facility_id, f.region ORDER BY m.facility_id`,
    );
    const rowsPerFacility: Record<string, number> = {};
    let rows = 0;
    for (const p of per.rows) {
      rowsPerFacility[String(p.facility_id)] = Number(p.n);
      rows += Number(p.n);
    }
    const hash = createHash('sha256');
    let bytes = 0;
    let lines = 0;
    let lastReport = 0;
    const tap = new Transform({
      transform(chunk: Buffer, _enc, done) {
        hash.update(chunk);
        bytes += chunk.length;
        for (let i = chunk.indexOf(10); i !== -1; i = chunk.indexOf(10, i + 1)) lines++;
        if (o.onProgress && bytes - lastReport >= 64 * 1024 * 1024) {
          lastReport = bytes;
          o.onProgress(bytes);
        }
        done(null, chunk);
      },
    });
    const sink = createWriteStream(o.file);
    const written = pipeline(tap, sink);
    await tx.copyOut(`COPY (SELECT ${COLUMNS.join(', ')} FROM ${o.hypertable} WHERE ${within('time')} ORDER BY facility_id, series_id, time) TO STDOUT (FORMAT csv, HEADER)`, tap);
    if (!tap.writableEnded) tap.end();
    await written;
    if (lines - 1 !== rows) throw new Error(`export of ${o.hypertable} [${o.rangeStart.toISOString()}, ${o.rangeEnd.toISOString()}) wrote ${lines - 1} rows but the snapshot counts ${rows}`);
    const v = await tx.query<{ pg: string; ts: string }>(`SELECT current_setting('server_version') AS pg, (SELECT extversion FROM pg_extension WHERE extname = 'timescaledb') AS ts`);
    const manifest: Manifest = {
      format: 1,
      hypertable: o.hypertable,
      region: o.region,
      rangeStart: o.rangeStart.toISOString(),
      rangeEnd: o.rangeEnd.toISOString(),
      rows,
      rowsPerFacility,
      minTime: per.rows.length ? per.rows.map((p) => p.lo).sort()[0]! : null,
      maxTime: per.rows.length ? per.rows.map((p) => p.hi).sort().at(-1)! : null,
      data: { file: 'data.csv', format: 'csv', header: true, columns: COLUMNS, bytes, sha256: hash.digest('hex') },
      ddl: await tableDdl(tx, o.hypertable),
      versions: { postgresql: v.rows[0]!.pg, timescaledb: v.rows[0]!.ts, strata: STRATA_VERSION },
    };
    return { manifest, regions: [...new Set(per.rows.map((p) => p.region ?? '(unregistered facility)'))].sort() };
  });
}
