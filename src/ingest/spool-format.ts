// The spool's on-disk format and the scanner that reads a segment back. A damaged record costs only
// its own bytes: after a bad record the scanner resynchronises on the next record header that checks
// out (magic, length within bounds and inside the file, crc32 of the payload), so a magic number that
// happens to sit inside payload bytes is never trusted.
//   Record: magic u32 | payload length u32 | crc32(payload) u32 | payload, big-endian. Payload:
//   batchId (16 uuid bytes) | facilityId i32 | rowCount u32 | spooledAt f64 (ms) | rows.
//   seg-<16-digit seq>.active.spool   the segment a process is appending to (renamed when sealed)
//   seg-<16-digit seq>.spool          a sealed segment: complete, never written again (older releases
//                                     named their active segment like this too; read as sealed)
import { crc32 } from 'node:zlib';
import { StrataError } from '../errors.ts';
import type { SpoolRecord } from './types.ts';

export const MAGIC = 0x53545350; // "STSP"
const MAGIC_BYTES = Buffer.from([0x53, 0x54, 0x53, 0x50]);
export const HEADER = 12;
export const FIXED = 32; // uuid 16 + facilityId 4 + rowCount 4 + spooledAt 8
export const MAX_PAYLOAD = 256 * 1024 * 1024;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

const SEALED = /^seg-(\d{16})\.spool$/;
const ACTIVE = /^seg-(\d{16})\.active\.spool$/;
const seqText = (seq: number) => String(seq).padStart(16, '0');
export const sealedName = (seq: number) => `seg-${seqText(seq)}.spool`;
export const activeName = (seq: number) => `seg-${seqText(seq)}.active.spool`;
/** The sequence number and state of a segment file name, or null for any other file. */
export function segmentName(name: string): { seq: number; active: boolean } | null {
  const m = SEALED.exec(name) ?? ACTIVE.exec(name);
  return m ? { seq: Number(m[1]), active: ACTIVE.test(name) } : null;
}
/** The sequence number a file name starts with (segments and their quarantined pieces), else 0. */
export const seqPrefix = (name: string) => Number(/^seg-(\d{16})/.exec(name)?.[1] ?? 0);

/** Bytes `records` take on disk once appended. */
export function spoolBytes(records: readonly SpoolRecord[]): number {
  return records.reduce((n, r) => n + HEADER + FIXED + r.rows.length, 0);
}

export function encodeRecords(records: readonly SpoolRecord[]): Buffer {
  const out = Buffer.alloc(spoolBytes(records));
  let o = 0;
  records.forEach((r, i) => {
    const bad = (what: string) => new StrataError('spool_record', `spool record ${i} (batch ${r.batchId}): ${what}`);
    if (!UUID.test(r.batchId)) throw bad('batchId is not a uuid');
    if (!Number.isInteger(r.facilityId) || r.facilityId < -(2 ** 31) || r.facilityId >= 2 ** 31) throw bad(`facilityId ${r.facilityId} is not an int4`);
    if (!Number.isInteger(r.rowCount) || r.rowCount < 0 || r.rowCount >= 2 ** 32) throw bad(`rowCount ${r.rowCount} is not a u32`);
    if (!Number.isFinite(r.spooledAt)) throw bad(`spooledAt ${r.spooledAt} is not finite`);
    if (FIXED + r.rows.length > MAX_PAYLOAD) throw bad(`${r.rows.length} row bytes exceed the record limit`);
    const len = FIXED + r.rows.length;
    const p = out.subarray(o + HEADER, o + HEADER + len);
    Buffer.from(r.batchId.replace(/-/g, ''), 'hex').copy(p, 0);
    p.writeInt32BE(r.facilityId, 16); p.writeUInt32BE(r.rowCount, 20); p.writeDoubleBE(r.spooledAt, 24);
    r.rows.copy(p, FIXED);
    out.writeUInt32BE(MAGIC, o); out.writeUInt32BE(len, o + 4); out.writeUInt32BE(crc32(p), o + 8);
    o += HEADER + len;
  });
  return out;
}

/** The fixed payload fields of a record as read, verified by its crc or (in a damaged span) not. */
export interface RecordHeader { batchId: string; facilityId: number; rowCount: number | null; spooledAt: number }
export interface ScannedRecord { offset: number; end: number; record: SpoolRecord }
/** Bytes [start, end) holding no intact record: what was wrong at `start`, and what the headers in it still say. */
export interface DamagedSpan {
  start: number;
  end: number;
  reason: string;
  /** Records the span held (at least): one per readable header, plus one for an unreadable remainder. */
  records: number;
  /** Rows of the records whose header could be read. */
  rows: number;
  /** False when some record's row count could not be read (rows is then a lower bound). */
  rowsKnown: boolean;
  /** The readable headers, unverified (their crc failed or could not be checked). */
  headers: RecordHeader[];
}
/** An incomplete last record (or zero fill) of a segment a crashed process was appending to. */
export interface TornTail { start: number; end: number; reason: string }
export interface SegmentScan { bytes: number; records: ScannedRecord[]; damage: DamagedSpan[]; torn: TornTail | null }

function readHeader(buf: Buffer, off: number, len: number): RecordHeader {
  const p = off + HEADER;
  const h = buf.toString('hex', p, p + 16);
  const rowCount = buf.readUInt32BE(p + 20);
  return {
    batchId: `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`,
    facilityId: buf.readInt32BE(p + 16),
    rowCount: rowCount * 2 <= len - FIXED ? rowCount : null, // a binary COPY tuple is at least 2 bytes
    spooledAt: buf.readDoubleBE(p + 24),
  };
}

type Decoded = { ok: true; record: SpoolRecord; end: number } | { ok: false; problem: string };

/** The intact record at `off`, or what is wrong there. Rows are a view into `buf`. */
export function decodeAt(buf: Buffer, off: number): Decoded {
  const rest = buf.length - off;
  if (rest < HEADER) return { ok: false, problem: `incomplete header (${rest} of ${HEADER} bytes)` };
  const magic = buf.readUInt32BE(off);
  if (magic !== MAGIC) return { ok: false, problem: `bad magic 0x${magic.toString(16).padStart(8, '0')}` };
  const len = buf.readUInt32BE(off + 4);
  if (len < FIXED || len > MAX_PAYLOAD) return { ok: false, problem: `bad payload length ${len}` };
  const end = off + HEADER + len;
  if (end > buf.length) return { ok: false, problem: `payload length ${len} runs past the end of the file (${buf.length} bytes)` };
  if (crc32(buf.subarray(off + HEADER, end)) !== buf.readUInt32BE(off + 8)) return { ok: false, problem: 'crc32 mismatch' };
  const h = readHeader(buf, off, len);
  if (!Number.isFinite(h.spooledAt)) return { ok: false, problem: 'spooledAt is not finite' };
  const record = { batchId: h.batchId, facilityId: h.facilityId, rowCount: buf.readUInt32BE(off + HEADER + 20), rows: buf.subarray(off + HEADER + FIXED, end), spooledAt: h.spooledAt };
  return { ok: true, record, end };
}

/** Offset of the next intact record at or after `from`, or -1. */
function nextRecord(buf: Buffer, from: number): number {
  for (let p = buf.indexOf(MAGIC_BYTES, from); p >= 0; p = buf.indexOf(MAGIC_BYTES, p + 1)) if (decodeAt(buf, p).ok) return p;
  return -1;
}

const allZero = (buf: Buffer, from: number, to = buf.length) => buf.subarray(from, to).every((b) => b === 0);

/** Why the tail from `off` (with no intact record after it) may be an unacknowledged append cut short, or null. */
function tornReason(buf: Buffer, off: number): string | null {
  const rest = buf.length - off;
  if (allZero(buf, off)) return `${rest} zero bytes`;
  if (rest < HEADER) {
    const head = buf.subarray(off, off + Math.min(rest, 4));
    return head.equals(MAGIC_BYTES.subarray(0, head.length)) ? `incomplete header (${rest} of ${HEADER} bytes)` : null;
  }
  const len = buf.readUInt32BE(off + 4);
  if (buf.readUInt32BE(off) !== MAGIC || len < FIXED || len > MAX_PAYLOAD || off + HEADER + len <= buf.length) return null;
  return `payload of ${rest - HEADER} of ${len} bytes`;
}

/** The longest run of zero bytes in [start, end) if it is at least 512 bytes long (a zeroed page). */
function zeroRun(buf: Buffer, start: number, end: number): [number, number] | null {
  let best: [number, number] | null = null;
  for (let i = start; i < end;) {
    if (buf[i] !== 0) { i++; continue; }
    let j = i;
    while (j < end && buf[j] === 0) j++;
    if (j - i >= 512 && (!best || j - i > best[1] - best[0])) best = [i, j];
    i = j;
  }
  return best;
}

function describeSpan(buf: Buffer, start: number, end: number, problem: string, tail: boolean): DamagedSpan {
  const headers: RecordHeader[] = [];
  let records = 0;
  let rows = 0;
  let rowsKnown = true;
  for (let pos = start; pos < end;) {
    // A header is readable when its length is sane and its magic is intact or its length ends
    // exactly at the next intact record (a flipped magic byte leaves the rest of the header usable).
    const len = end - pos >= HEADER ? buf.readUInt32BE(pos + 4) : 0;
    const fits = end - pos >= HEADER + FIXED && len >= FIXED && len <= MAX_PAYLOAD;
    if (fits && (buf.readUInt32BE(pos) === MAGIC || pos + HEADER + len === end)) {
      const h = readHeader(buf, pos, Math.min(len, end - pos - HEADER));
      headers.push(h);
      records++;
      if (h.rowCount === null) rowsKnown = false;
      else rows += h.rowCount;
      if (pos + HEADER + len <= end) { pos += HEADER + len; continue; }
      break;
    }
    records++; // an unreadable remainder: at least one record whose header is gone
    rowsKnown = false;
    break;
  }
  const zeros = zeroRun(buf, start, end);
  const reason = [
    `${problem} at byte offset ${start}`,
    tail ? 'no intact record follows' : `the next intact record starts at byte offset ${end}`,
    ...(zeros ? [`${zeros[1] - zeros[0]} zero bytes at ${zeros[0]}-${zeros[1]}`] : []),
  ].join('; ');
  return { start, end, reason, records, rows, rowsKnown, headers };
}

/**
 * Every intact record of a segment in order, the damaged spans between them, and (only when
 * `mayHaveTornTail`: the active segment of a process that crashed) a torn tail: an incomplete last
 * record or zero fill, which can never have been acknowledged. Anywhere else the same bytes are damage.
 */
export function scanSegment(buf: Buffer, opts: { mayHaveTornTail: boolean }): SegmentScan {
  const scan: SegmentScan = { bytes: buf.length, records: [], damage: [], torn: null };
  for (let off = 0; off < buf.length;) {
    const r = decodeAt(buf, off);
    if (r.ok) {
      scan.records.push({ offset: off, end: r.end, record: r.record });
      off = r.end;
      continue;
    }
    const next = nextRecord(buf, off + 1);
    if (next < 0) {
      const torn = opts.mayHaveTornTail ? tornReason(buf, off) : null;
      if (torn !== null) scan.torn = { start: off, end: buf.length, reason: torn };
      else scan.damage.push(describeSpan(buf, off, buf.length, r.problem, true));
      break;
    }
    scan.damage.push(describeSpan(buf, off, next, r.problem, false));
    off = next;
  }
  return scan;
}

/** One line about a damaged span, for logs, reason files and `strata spool inspect`. */
export function spanSummary(span: Omit<DamagedSpan, 'headers'>): string {
  const rows = span.rowsKnown ? `${span.rows} rows` : span.rows > 0 ? `at least ${span.rows} rows` : 'rows unknown';
  const records = span.rowsKnown ? `${span.records} record${span.records === 1 ? '' : 's'}` : `at least ${span.records} record${span.records === 1 ? '' : 's'}`;
  return `bytes ${span.start}-${span.end} (${span.end - span.start} bytes, ${records}, ${rows}): ${span.reason}`;
}
