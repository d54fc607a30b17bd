// The byte-level fast path (DESIGN §9): a line-protocol body straight into binary COPY tuples.
// For a line whose series are cached it makes no string, array, object or BigInt: it hashes the
// measurement+tag bytes as it scans them, looks each field's series up by those bytes (series-index.ts),
// reads values and the timestamp from bytes (byte-values.ts) and writes 42-byte tuples into a reused
// slab. Anything else — an escape, a string field, an unusual form, a value it cannot read exactly,
// a series not cached yet — goes to the full parser (lineprotocol.ts) by byte span, which returns
// a point for the series catalog or the line's error. Both paths see the same lines (line-scan.ts).
import { isUtf8 } from 'node:buffer';
import { BACKSLASH, COMMA, EQUALS, HASH, MINUS, SPACE } from './ascii.ts';
import { read, readTimeUs, readValue } from './byte-values.ts';
import { forEachLine } from './line-scan.ts';
import { parseLineAt, type ParseResult, type Precision } from './lineprotocol.ts';
// The per-byte hash steps in fastLine are hashByte() written out, as measured: a function that large
// may be past V8's inlining budget, and a call per byte would be a real call.
import { FNV_PRIME, HASH_START, hashByte, hashBytes } from './series-key.ts';
import { viewOf, type SeriesIndex } from './series-index.ts';
import { TUPLE_BYTES } from './copy-encode.ts';
import type { Bounds } from './time-window.ts';

export interface Encoded extends ParseResult {
  /** Binary COPY tuples of the lines the fast path took (a copy the caller owns). */
  tuples: Buffer;
  rows: number;
  /** `points` are the lines the fast path left to the full parser: their series must be resolved. */
}

const MAX_TAGS = 32;
const MAX_FIELDS = 64;
const SLAB_BYTES = 1 << 20;
/** A slab grown beyond this for one large body is not kept for the next. */
const SLAB_KEEP = 8 << 20;
const PG_EPOCH_US = 946_684_800_000_000;
const TWO32 = 4_294_967_296;
const EMPTY = Buffer.alloc(0);
const OPEN: Bounds = { minUs: -Infinity, maxUs: Infinity };

/** `time` as a key (refused as a tag or field key; the full parser says so). */
const isTime = (b: Uint8Array, s: number, e: number) => e - s === 4 && b[s] === 116 && b[s + 1] === 105 && b[s + 2] === 109 && b[s + 3] === 101;

function compareSpans(b: Uint8Array, as: number, ae: number, bs: number, be: number): number {
  const n = Math.min(ae - as, be - bs);
  for (let i = 0; i < n; i++) {
    const d = b[as + i]! - b[bs + i]!;
    if (d !== 0) return d;
  }
  return ae - as - (be - bs);
}

export class LineEncoder {
  private slab: Buffer = Buffer.allocUnsafe(SLAB_BYTES);
  private view: DataView = new DataView(this.slab.buffer, this.slab.byteOffset, this.slab.byteLength);
  private used = 0;
  /** Tag spans of the current line: key start, key end, value start, value end. */
  private readonly tags = new Int32Array(MAX_TAGS * 4);
  private readonly order = new Int32Array(MAX_TAGS);
  private readonly lineIds = new Int32Array(MAX_FIELDS);
  /** The current line's head with tags sorted, then a space and the field key being looked up. */
  private canon: Buffer = Buffer.allocUnsafe(4096);
  private canonView: DataView = viewOf(this.canon);
  /** A DataView of the body being encoded. */
  private bodyView: DataView = viewOf(EMPTY);
  private canonLen = -1;
  private canonHash = 0;
  /** The accepted time window of the body being encoded (µs); a line outside goes to the full parser, whose caller refuses it. */
  private minUs = -Infinity;
  private maxUs = Infinity;

  /**
   * Encodes `body`. `index` is the facility's series index, or null when its series are not loaded
   * (then every line goes to the full parser). `receiveUs` stamps lines without a timestamp.
   */
  encode(body: Buffer, precision: Precision, facilityId: number, index: SeriesIndex | null, receiveUs: number, maxLineBytes: number, aliasRoom: number, window: Bounds = OPEN): Encoded {
    const out: Encoded = { points: [], errors: [], fieldErrors: [], tuples: EMPTY, rows: 0 };
    this.minUs = window.minUs;
    this.maxUs = window.maxUs;
    const checkUtf8 = !isUtf8(body);
    this.used = 0;
    this.bodyView = viewOf(body);
    let room = aliasRoom;
    forEachLine(body, (s, e, line, joined) => {
      if (s === e) return true;
      if (index && e - s <= maxLineBytes && (!checkUtf8 || isUtf8(body.subarray(s, e)))) {
        const r = this.fastLine(body, s, e, precision, facilityId, index, receiveUs, room > 0);
        if (r >= 0) {
          room -= r;
          return true;
        }
      }
      return parseLineAt(body, s, e, line, precision, maxLineBytes, checkUtf8, out, joined);
    });
    out.rows = this.used / TUPLE_BYTES;
    this.bodyView = viewOf(EMPTY);
    out.tuples = Buffer.allocUnsafe(this.used);
    this.slab.copy(out.tuples, 0, 0, this.used);
    if (this.slab.length > SLAB_KEEP) this.setSlab(Buffer.allocUnsafe(SLAB_BYTES));
    return out;
  }

  private setSlab(slab: Buffer): void {
    this.slab = slab;
    this.view = new DataView(slab.buffer, slab.byteOffset, slab.byteLength);
  }

  /** One line; the number of aliases it added (0 or more), or -1 to leave the line to the full parser. */
  private fastLine(b: Buffer, s: number, e: number, precision: Precision, facilityId: number, index: SeriesIndex, receiveUs: number, mayAlias: boolean): number {
    const c0 = b[s]!;
    // Blank, comment, leading whitespace (ASCII, or a UTF-8 lead byte of one that trimStart() drops).
    if (c0 <= SPACE || c0 === HASH || c0 === 0xc2 || c0 === 0xe1 || c0 === 0xe2 || c0 === 0xe3 || c0 === 0xef) return -1;
    // Measurement and tags, hashed as they are scanned.
    let h = HASH_START;
    let j = s;
    for (; j < e; j++) {
      const c = b[j]!;
      if (c === COMMA || c === SPACE) break;
      if (c === BACKSLASH || c === 0) return -1;
      h = Math.imul(h ^ c, FNV_PRIME);
    }
    const measurementEnd = j;
    let nt = 0;
    let sorted = true;
    while (j < e && b[j] === COMMA) {
      h = hashByte(h, COMMA);
      const ks = ++j;
      for (; j < e; j++) {
        const c = b[j]!;
        if (c === EQUALS) break;
        if (c === COMMA || c === SPACE || c === BACKSLASH || c === 0) return -1;
        h = Math.imul(h ^ c, FNV_PRIME);
      }
      const ke = j;
      if (ke === ks || j >= e || isTime(b, ks, ke)) return -1;
      h = hashByte(h, EQUALS);
      const vs = ++j;
      for (; j < e; j++) {
        const c = b[j]!;
        if (c === COMMA || c === SPACE) break;
        if (c === EQUALS || c === BACKSLASH || c === 0) return -1;
        h = Math.imul(h ^ c, FNV_PRIME);
      }
      if (j === vs || nt === MAX_TAGS) return -1;
      const t = nt * 4;
      if (nt > 0 && sorted) {
        const cmp = compareSpans(b, this.tags[t - 4]!, this.tags[t - 3]!, ks, ke);
        if (cmp === 0) return -1; // a duplicate tag: the full parser rejects the line
        if (cmp > 0) sorted = false;
      }
      this.tags[t] = ks;
      this.tags[t + 1] = ke;
      this.tags[t + 2] = vs;
      this.tags[t + 3] = j;
      nt++;
    }
    if (j >= e || b[j] !== SPACE || measurementEnd === s) return -1;
    const headEnd = j++;
    if (b[j] === SPACE) return -1;
    this.canonLen = -1;
    // Fields: look each series up and write its tuple; the time is patched in once it is read.
    const first = this.used;
    let o = first;
    let nf = 0;
    let aliases = 0;
    for (;;) {
      const fs = j;
      let fh = hashByte(h, SPACE);
      for (; j < e; j++) {
        const c = b[j]!;
        if (c === EQUALS) break;
        if (c === COMMA || c === SPACE || c === BACKSLASH || c === 0) return -1;
        fh = Math.imul(fh ^ c, FNV_PRIME);
      }
      const fe = j;
      if (fe === fs || j >= e || isTime(b, fs, fe)) return -1;
      j = readValue(b, j + 1, e); // a string (`"`) or an empty value is not read here
      if (j < 0) return -1;
      const value = read[0]!;
      let id = index.find(fh, b, this.bodyView, s, headEnd, fs, fe);
      if (id < 0 && !sorted) {
        id = this.findCanonical(b, s, measurementEnd, headEnd, nt, fs, fe, index);
        if (id === -2) return -1;
        if (id >= 0 && mayAlias) {
          index.add(this.aliasKey(b, s, headEnd, fs, fe), fh, id, true);
          aliases++;
        }
      }
      if (id < 0 || nf === MAX_FIELDS) return -1;
      for (let k = 0; k < nf; k++) if (this.lineIds[k] === id) return -1; // a field given twice: the full parser decides
      this.lineIds[nf++] = id;
      if (o + TUPLE_BYTES > this.slab.length) this.grow(o + TUPLE_BYTES);
      const v = this.view;
      v.setInt16(o, 4);
      v.setInt32(o + 2, 8);
      v.setInt32(o + 14, 4);
      v.setInt32(o + 18, facilityId);
      v.setInt32(o + 22, 4);
      v.setInt32(o + 26, id);
      v.setInt32(o + 30, 8);
      v.setFloat64(o + 34, value);
      o += TUPLE_BYTES;
      if (j < e && b[j] === COMMA) {
        j++;
        continue;
      }
      break;
    }
    let us = receiveUs;
    if (j < e) {
      // b[j] is a space: the timestamp follows, alone.
      const ts = ++j;
      if (ts >= e || (b[ts]! < 48 && b[ts] !== MINUS)) return -1;
      if (!readTimeUs(b, ts, e, precision)) return -1;
      us = read[0]!;
    }
    if (us < this.minUs || us > this.maxUs) return -1;
    const pg = us - PG_EPOCH_US;
    const hi = Math.floor(pg / TWO32);
    const lo = pg - hi * TWO32;
    const v = this.view;
    for (let p = first; p < o; p += TUPLE_BYTES) {
      v.setInt32(p + 6, hi);
      v.setUint32(p + 10, lo);
    }
    this.used = o;
    return aliases;
  }

  /**
   * The id of the line's series under its canonical (tag-sorted) key, or -1 when not cached, or -2
   * when two tags share a key (the full parser rejects the line).
   */
  private findCanonical(b: Buffer, s: number, measurementEnd: number, headEnd: number, nt: number, fs: number, fe: number, index: SeriesIndex): number {
    const headLen = headEnd - s;
    if (headLen + 1 + (fe - fs) > this.canon.length) {
      // Keep the sorted head already built for this line's earlier fields.
      const bigger = Buffer.allocUnsafe(2 * (headLen + 1 + (fe - fs)));
      if (this.canonLen > 0) this.canon.copy(bigger, 0, 0, this.canonLen);
      this.canon = bigger;
      this.canonView = viewOf(bigger);
    }
    const c = this.canon;
    if (this.canonLen < 0) {
      const order = this.order;
      const tags = this.tags;
      for (let i = 0; i < nt; i++) order[i] = i;
      for (let i = 1; i < nt; i++) {
        const x = order[i]!;
        let k = i - 1;
        for (; k >= 0; k--) {
          const cmp = compareSpans(b, tags[order[k]! * 4]!, tags[order[k]! * 4 + 1]!, tags[x * 4]!, tags[x * 4 + 1]!);
          if (cmp === 0) return -2;
          if (cmp < 0) break;
          order[k + 1] = order[k]!;
        }
        order[k + 1] = x;
      }
      // The same bytes as the head, tags reordered: `key=value` runs are contiguous in the line.
      let n = b.copy(c, 0, s, measurementEnd);
      for (let i = 0; i < nt; i++) {
        const t = order[i]! * 4;
        c[n++] = COMMA;
        n += b.copy(c, n, tags[t]!, tags[t + 3]!);
      }
      this.canonLen = n;
      this.canonHash = hashByte(hashBytes(HASH_START, c, 0, n), SPACE);
    }
    const n = this.canonLen;
    c[n] = SPACE;
    b.copy(c, n + 1, fs, fe);
    return index.find(hashBytes(this.canonHash, b, fs, fe), c, this.canonView, 0, n, n + 1, n + 1 + (fe - fs));
  }

  /** The line's own head and one field key as one key (an alias of the canonical one). */
  private aliasKey(b: Buffer, s: number, headEnd: number, fs: number, fe: number): Buffer {
    const key = Buffer.allocUnsafe(headEnd - s + 1 + fe - fs);
    b.copy(key, 0, s, headEnd);
    key[headEnd - s] = SPACE;
    b.copy(key, headEnd - s + 1, fs, fe);
    return key;
  }

  private grow(need: number): void {
    // Everything written so far, the line in progress (past `used`) included.
    const next = Buffer.allocUnsafe(Math.max(need, this.slab.length * 2));
    this.slab.copy(next, 0, 0, this.slab.length);
    this.setSlab(next);
  }
}

