// Rows encoded for COPY (text and binary) arrive in strata.metrics exactly as given.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { migrate } from '../src/db/migrate.ts';
import type { Db } from '../src/db/port.ts';
import { timescaleTargets } from './support/databases.ts';
import { METRICS_COPY_BINARY, METRICS_COPY_TEXT, encodeBinary, encodeText, type MetricRow } from '../src/ingest/copy-encode.ts';

const rows: MetricRow[] = [
  { timeUs: 1_795_262_400_000_000n, facilityId: 1, seriesId: 1, value: 71.5 },
  { timeUs: 1_795_262_400_123_456n, facilityId: 2, seriesId: 7, value: -0.1 },
  { timeUs: 946_684_799_999_999n, facilityId: 3, seriesId: 2_147_483_647, value: 1e-300 },
  { timeUs: -1n, facilityId: 4, seriesId: 1, value: Number.NaN },
  { timeUs: 1_795_262_400_000_001n, facilityId: 5, seriesId: 1, value: -Infinity },
  { timeUs: 1_795_262_400_000_002n, facilityId: 6, seriesId: 1, value: 1.7976931348623157e308 },
  { timeUs: 1_795_262_400_000_003n, facilityId: 7, seriesId: 1, value: -0 },
];

const expected = rows.map((r) => ({ us: r.timeUs.toString(), f: r.facilityId, s: r.seriesId, v: r.value, neg: Object.is(r.value, -0) }));

describe('COPY encoding refuses rows it cannot represent', () => {
  it.each([
    ['a fractional series id', { timeUs: 0n, facilityId: 1, seriesId: 1.5, value: 1 }, /row 0: seriesId 1.5 is not an int4/],
    ['a NaN facility id', { timeUs: 0n, facilityId: Number.NaN, seriesId: 1, value: 1 }, /row 0: facilityId NaN is not an int4/],
    ['an id beyond int4', { timeUs: 0n, facilityId: 2 ** 31, seriesId: 1, value: 1 }, /facilityId 2147483648 is not an int4/],
    ['a time after year 9999', { timeUs: 253_402_300_800_000_000n, facilityId: 1, seriesId: 1, value: 1 }, /outside years 0001–9999/],
  ] as [string, MetricRow, RegExp][])('%s', (_name, row, message) => {
    expect(() => encodeBinary([row])).toThrow(message);
    expect(() => encodeText([row])).toThrow(message);
  });
});

describe.each(timescaleTargets())('COPY encoding of metric rows into strata.metrics on $name', (target) => {
  let db: Db;
  let handle: Awaited<ReturnType<typeof target.open>>;
  beforeAll(async () => {
    handle = await target.open();
    db = handle.db;
    await migrate(db, { chunkInterval: '1 day' });
  });
  afterAll(async () => handle.close());

  async function stored() {
    const r = await db.query<{ us: string; f: number; s: number; v: number; neg: boolean }>(
      `SELECT ((extract(epoch FROM time) * 1000000)::numeric(30,0))::text AS us, facility_id AS f, series_id AS s, value AS v,
              value = 0 AND value::text = '-0' AS neg
         FROM strata.metrics ORDER BY facility_id`,
    );
    await db.exec('TRUNCATE strata.metrics');
    return r.rows;
  }

  it.each([
    ['text', METRICS_COPY_TEXT, encodeText],
    ['binary', METRICS_COPY_BINARY, encodeBinary],
  ] as const)('%s rows keep their microsecond timestamps and exact values', async (_name, sql, encode) => {
    expect(await db.copyIn(sql, [encode(rows)])).toBe(rows.length);
    expect(await stored()).toEqual(expected);
  });
});
