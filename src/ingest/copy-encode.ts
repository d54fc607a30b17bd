// Encodes narrow metric rows (time, facility_id, series_id, value) into COPY buffers, once per row.
// Text is what psql \copy sends; binary skips the server's text parsing and Node's timestamp formatting.

/** One row of strata.metrics. `timeUs` is microseconds since the Unix epoch (BigInt keeps ns inputs exact). */
export interface MetricRow {
  timeUs: bigint;
  facilityId: number;
  seriesId: number;
  value: number;
}

export const METRICS_COPY_TEXT = 'COPY strata.metrics (time, facility_id, series_id, value) FROM STDIN';
export const METRICS_COPY_BINARY = 'COPY strata.metrics (time, facility_id, series_id, value) FROM STDIN (FORMAT binary)';

const PG_EPOCH_US = 946_684_800_000_000n; // 2000-01-01T00:00:00Z in Unix microseconds
const HEADER = Buffer.from('PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0', 'latin1');
const ROW_BYTES = 2 + (4 + 8) + (4 + 4) + (4 + 4) + (4 + 8);

// PostgreSQL's timestamptz range is wider, but text encoding here is limited to years 0001–9999.
const MIN_US = -62_135_596_800_000_000n; // 0001-01-01T00:00:00Z
const MAX_US = 253_402_300_799_999_999n; // 9999-12-31T23:59:59.999999Z

function check(r: MetricRow, i: number): void {
  if (!Number.isInteger(r.facilityId) || r.facilityId < -2_147_483_648 || r.facilityId > 2_147_483_647) throw new RangeError(`row ${i}: facilityId ${r.facilityId} is not an int4`);
  if (!Number.isInteger(r.seriesId) || r.seriesId < -2_147_483_648 || r.seriesId > 2_147_483_647) throw new RangeError(`row ${i}: seriesId ${r.seriesId} is not an int4`);
  if (r.timeUs < MIN_US || r.timeUs > MAX_US) throw new RangeError(`row ${i}: time ${r.timeUs} µs is outside years 0001–9999`);
}

/** The binary COPY file header and trailer that frame encoded tuples. */
export const BINARY_HEADER: Buffer = HEADER;
export const BINARY_TRAILER: Buffer = Buffer.from([0xff, 0xff]);

/** Binary COPY tuples only (no header or trailer), so several requests' rows can share one COPY. */
export function encodeTuples(rows: readonly MetricRow[]): Buffer {
  const buf = Buffer.allocUnsafe(rows.length * ROW_BYTES);
  writeTuples(rows, buf, 0);
  return buf;
}

function writeTuples(rows: readonly MetricRow[], buf: Buffer, start: number): number {
  let o = start;
  for (let i = 0; i < rows.length; i++) {
    const r = rows[i]!;
    check(r, i);
    buf.writeInt16BE(4, o);
    buf.writeInt32BE(8, o + 2);
    buf.writeBigInt64BE(r.timeUs - PG_EPOCH_US, o + 6);
    buf.writeInt32BE(4, o + 14);
    buf.writeInt32BE(r.facilityId, o + 18);
    buf.writeInt32BE(4, o + 22);
    buf.writeInt32BE(r.seriesId, o + 26);
    buf.writeInt32BE(8, o + 30);
    buf.writeDoubleBE(r.value, o + 34);
    o += ROW_BYTES;
  }
  return o;
}

/** Bytes of one encoded binary tuple. */
export const TUPLE_BYTES = ROW_BYTES;

/** Binary COPY: header, rows, trailer; one allocation per call. Throws RangeError on a row it cannot encode. */
export function encodeBinary(rows: readonly MetricRow[]): Buffer {
  const buf = Buffer.allocUnsafe(HEADER.length + rows.length * ROW_BYTES + 2);
  HEADER.copy(buf, 0);
  const o = writeTuples(rows, buf, HEADER.length);
  buf.writeInt16BE(-1, o);
  return buf;
}

function textTime(us: bigint): string {
  const frac = ((us % 1_000_000n) + 1_000_000n) % 1_000_000n; // floor semantics for times before 1970
  const seconds = (us - frac) / 1_000_000n;
  const iso = new Date(Number(seconds) * 1000).toISOString(); // YYYY-MM-DDTHH:MM:SS.000Z
  return `${iso.slice(0, 19)}.${String(frac).padStart(6, '0')}+00`;
}

function textValue(v: number): string {
  if (Number.isNaN(v)) return 'NaN';
  if (v === Infinity) return 'Infinity';
  if (v === -Infinity) return '-Infinity';
  return Object.is(v, -0) ? '-0' : String(v);
}

/** Text COPY, as psql \copy would send it. Throws RangeError on a row it cannot encode. */
export function encodeText(rows: readonly MetricRow[]): Buffer {
  let s = '';
  for (let i = 0; i < rows.length; i++) {
    const r = rows[i]!;
    check(r, i);
    const v = textValue(r.value);
    s += `${textTime(r.timeUs)}\t${r.facilityId}\t${r.seriesId}\t${v}\n`;
  }
  return Buffer.from(s, 'utf8');
}
