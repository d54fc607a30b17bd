// The storage benchmarks' sensor data: F facilities × S series, one sample per series every `step`
// seconds for `hours` hours from 2026-11-20 00:00 UTC; a third of the series slowly varying floats
// (2 decimals), a third counters, a third booleans. Facilities are inserted directly (no reader roles).
import { parseArgs } from 'node:util';
import type { Db } from '../../src/db/port.ts';

/**
 * The command line of a benchmark on the sensor rows: --url (a superuser URL of a TimescaleDB
 * server, required), --facilities, --series, --hours, --step-seconds, --out, plus the benchmark's own
 * string options (`extra`, name → default). Exits 64 with the usage when --url is missing.
 */
export function sensorBenchArgs(name: string, defaultHours: number, extra: Record<string, string> = {}) {
  const own = Object.fromEntries(Object.entries(extra).map(([k, d]) => [k, { type: 'string' as const, default: d }]));
  const { values } = parseArgs({
    options: {
      url: { type: 'string' },
      facilities: { type: 'string', default: '20' },
      series: { type: 'string', default: '100' },
      hours: { type: 'string', default: String(defaultHours) },
      'step-seconds': { type: 'string', default: '10' },
      out: { type: 'string', default: 'bench/results' },
      ...own,
    },
  });
  if (!values.url) {
    const more = Object.keys(extra).map((k) => ` [--${k} …]`).join('');
    console.error(`usage: npx tsx bench/${name}.ts --url <superuser URL of a TimescaleDB server> [--facilities N] [--series N] [--hours N] [--step-seconds N]${more}`);
    process.exit(64);
  }
  const v = values as Record<string, string>;
  return {
    url: v.url!,
    facilities: Number(v.facilities),
    series: Number(v.series),
    hours: Number(v.hours),
    step: Number(v['step-seconds']),
    out: v.out!,
    /** The benchmark's own options, as given or defaulted. */
    extra: Object.fromEntries(Object.keys(extra).map((k) => [k, v[k]!])),
  };
}

export const SENSOR_START = `timestamptz '2026-11-20 00:00'`;

export async function sensorFacilities(db: Db, facilities: number, series: number, rolePrefix: string): Promise<void> {
  await db.exec(`INSERT INTO strata.facilities (code, region, token_hash, reader_role)
    SELECT 'f' || i, 'bench', sha256(('t' || i)::bytea), '${rolePrefix}_' || i FROM generate_series(1, ${facilities}) i`);
  await db.exec(`INSERT INTO strata.series (facility_id, measurement, field) SELECT f.id, 'machine', 'f' || s FROM strata.facilities f, generate_series(1, ${series}) s`);
}

/** INSERT of the rows; `every` > 1 keeps one sample in `every`, shifted by `offset` seconds (late rows). */
export function sensorRowsSql(o: { hours: number; step: number; every?: number; offset?: number }): string {
  const every = o.every ?? 1;
  const offset = o.offset ?? 0;
  return `
  INSERT INTO strata.metrics (time, facility_id, series_id, value)
  SELECT t, s.facility_id, s.id,
         CASE s.id % 3
           WHEN 0 THEN round((20 + 5 * sin(extract(epoch FROM t) / 3600 + s.id))::numeric, 2)::float8
           WHEN 1 THEN floor(extract(epoch FROM t - timestamptz '2026-11-01') / 7 + s.id * 1000)
           ELSE (extract(epoch FROM t)::bigint / 600 + s.id) % 2
         END
    FROM generate_series(${SENSOR_START} + interval '${offset} seconds', ${SENSOR_START} + interval '${o.hours} hours' - interval '${o.step} seconds',
                         interval '${o.step * every} seconds') t, strata.series s`;
}
