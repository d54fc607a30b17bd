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

/** Binary COPY: header, rows, trailer; one allocation per call. */
export function encodeBinary(rows: readonly MetricRow[]): Buffer {
  const buf = Buffer.allocUnsafe(HEADER.length + rows.length * ROW_BYTES + 2);
  HEADER.copy(buf, 0);
  let o = HEADER.length;
  for (const r of rows) {
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
  buf.writeInt16BE(-1, o);
  return buf;
}

function textTime(us: bigint): string {
  const frac = ((us % 1_000_000n) + 1_000_000n) % 1_000_000n; // floor semantics for times before 1970
  const seconds = (us - frac) / 1_000_000n;
  const iso = new Date(Number(seconds) * 1000).toISOString(); // YYYY-MM-DDTHH:MM:SS.000Z
  return `${iso.slice(0, 19)}.${String(frac).padStart(6, '0')}+00`;
}

/** Text COPY, as psql \copy would send it. */
export function encodeText(rows: readonly MetricRow[]): Buffer {
  let s = '';
  for (const r of rows) {
    const v = Number.isNaN(r.value) ? 'NaN' : r.value === Infinity ? 'Infinity' : r.value === -Infinity ? '-Infinity' : String(r.value);
    s += `${textTime(r.timeUs)}\t${r.facilityId}\t${r.seriesId}\t${v}\n`;
  }
  return Buffer.from(s, 'utf8');
}
