// The byte-level fast path against the full parser: the same random and hostile bodies through both
// must give identical tuples and identical verdicts, whatever the series cache holds.
import { describe, expect, it } from 'vitest';
import { encodeTuples, TUPLE_BYTES, type MetricRow } from '../../src/ingest/copy-encode.ts';
import { LineEncoder } from '../../src/ingest/line-encoder.ts';
import { MAX_LINE_BYTES, parseLineProtocol, type ParsedPoint, type Precision } from '../../src/ingest/lineprotocol.ts';
import { SeriesIndex } from '../../src/ingest/series-index.ts';
import { canonicalKey, keyHash } from '../../src/ingest/series-key.ts';

const FACILITY = 7;
const RECEIVE_US = 1_764_000_000_123_456;

/** Series ids by canonical key, assigned in first-seen order (the test's stand-in for the catalog). */
class Ids {
  private ids = new Map<string, number>();
  of(p: ParsedPoint, field: string): number {
    const k = canonicalKey(p.measurement, p.tags, field).toString('latin1');
    let id = this.ids.get(k);
    if (id === undefined) this.ids.set(k, (id = this.ids.size + 1));
    return id;
  }
  /** An index holding every key seen so far, or (with `keep`) those it picks. */
  index(keep: (n: number) => boolean = () => true): SeriesIndex {
    const index = new SeriesIndex();
    let n = 0;
    for (const [k, id] of this.ids) {
      if (!keep(n++)) continue;
      const key = Buffer.from(k, 'latin1');
      index.add(key, keyHash(key), id);
    }
    return index;
  }
}

function rowsOf(points: readonly ParsedPoint[], ids: Ids): MetricRow[] {
  const rows: MetricRow[] = [];
  for (const p of points) {
    const timeUs = p.timeNs === null ? BigInt(RECEIVE_US) : p.timeNs >= 0n ? p.timeNs / 1000n : -((-p.timeNs + 999n) / 1000n);
    for (const f of p.fields) rows.push({ timeUs, facilityId: FACILITY, seriesId: ids.of(p, f.key), value: f.value });
  }
  return rows;
}

const tuples = (buf: Buffer) => {
  const out: string[] = [];
  for (let o = 0; o < buf.length; o += TUPLE_BYTES) out.push(buf.toString('hex', o, o + TUPLE_BYTES));
  return out.sort();
};

type Verdict = { tuples: string[]; errors: unknown[]; fieldErrors: unknown[] };

/** The reference: the full parser alone. */
function reference(body: Buffer, precision: Precision, ids: Ids, maxLineBytes = MAX_LINE_BYTES): Verdict {
  const ref = parseLineProtocol(body, precision, maxLineBytes);
  return { tuples: tuples(encodeTuples(rowsOf(ref.points, ids))), errors: ref.errors, fieldErrors: ref.fieldErrors };
}

/** The gateway's way: the fast path, with the full parser behind it for the lines it leaves. */
function fast(body: Buffer, precision: Precision, ids: Ids, index: SeriesIndex | null, encoder = new LineEncoder(), maxLineBytes = MAX_LINE_BYTES) {
  const enc = encoder.encode(body, precision, FACILITY, index, RECEIVE_US, maxLineBytes, 1 << 20);
  const verdict: Verdict = { tuples: tuples(Buffer.concat([enc.tuples, encodeTuples(rowsOf(enc.points, ids))])), errors: enc.errors, fieldErrors: enc.fieldErrors };
  return { verdict, fastRows: enc.rows };
}

function both(body: Buffer, precision: Precision, ids: Ids, index: SeriesIndex | null, encoder = new LineEncoder(), maxLineBytes = MAX_LINE_BYTES) {
  const f = fast(body, precision, ids, index, encoder, maxLineBytes);
  return { ref: reference(body, precision, ids, maxLineBytes), fast: f.verdict, fastRows: f.fastRows };
}

function random(seed: number) {
  let s = seed >>> 0;
  const next = () => ((s = (Math.imul(s, 1_664_525) + 1_013_904_223) >>> 0) / 2 ** 32);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(next() * xs.length)]!;
  return { next, pick, int: (n: number) => Math.floor(next() * n) };
}

const NAMES = ['cpu', 'sensor', 'm', 'temp', 'Druck', 'température', '温度', 'a=b', 'x"y'];
const TAG_KEYS = ['host', 'line', 'cell', 'region', 'a', 'b', 'zone', 'é', 'time'];
const TAG_VALUES = ['L3', 'C7', 'us-west', 'a', '1', 'ü', '"q"', 'x'.repeat(40)];
const FIELD_KEYS = ['value', 'v', 'usage_idle', 'f0', 'f1', 'f2', 'ß', 'time', 'x"'];
const HOSTILE = ['\\', '"', '=', ',', ' ', '\t', '\r', '\n', '\u0000', '#', 'i', 'u', 'e', '-', '+', '.', '\u00a0', '\ufeff', 'é', '9'];

function value(r: ReturnType<typeof random>): string {
  switch (r.int(12)) {
    case 0: return `${r.int(2) ? '-' : ''}${r.int(1_000_000)}i`;
    case 1: return `${r.int(10 ** 9)}${r.int(10 ** 9)}${r.int(10)}i`; // up to 19 digits
    case 2: return `${r.int(10 ** 6)}u`;
    case 3: return r.pick(['t', 'T', 'true', 'True', 'TRUE', 'f', 'F', 'false', 'False', 'FALSE', 'tRUE', 'yes']);
    case 4: return `${(r.next() - 0.5) * 10 ** r.int(30)}`;
    case 5: return `${r.int(2) ? '-' : ''}${r.int(1000)}.${r.int(1000)}e${r.pick(['', '-', '+'])}${r.int(40)}`;
    case 6: return r.pick(['.5', '1.', '-0', '+1', '-.0', '0.1', '1e', 'NaN', 'inf', '1e400', '00012.50', '"text"', '"a\nb"', '1_0']);
    case 7: return `${r.int(10 ** 8)}.${String(r.int(10 ** 8)).padStart(8, '0')}${r.int(10 ** 6)}`; // more digits than 2^53
    default: return (20 + r.next() * 80).toFixed(r.int(5));
  }
}

function timestamp(r: ReturnType<typeof random>): string {
  switch (r.int(8)) {
    case 0: return '';
    case 1: return ` -${r.int(10 ** 6)}`;
    case 2: return ` ${r.int(10)}${'9'.repeat(r.int(20))}`;
    case 3: return ` ${r.int(2) ? '-' : ''}${String(r.int(10 ** 9))}${String(r.int(10 ** 9)).padStart(9, '0')}${r.int(10)}`;
    default: return ` ${1_700_000_000 + r.int(10 ** 8)}${String(r.int(10 ** 9)).padStart(9, '0')}`.slice(0, 2 + r.int(19));
  }
}

function line(r: ReturnType<typeof random>): string {
  let tags = '';
  for (let t = r.int(4); t > 0; t--) tags += `,${r.pick(TAG_KEYS)}=${r.pick(TAG_VALUES)}`;
  let fields = '';
  for (let f = 1 + r.int(r.int(4) === 0 ? 12 : 3); f > 0; f--) fields += `${fields ? ',' : ''}${r.pick(FIELD_KEYS)}=${value(r)}`;
  let l = `${r.pick(NAMES)}${tags} ${fields}${timestamp(r)}`;
  // A third of the lines get hostile edits: inserted, replaced or deleted bytes.
  if (r.int(3) === 0) {
    for (let k = 1 + r.int(3); k > 0; k--) {
      const at = r.int(l.length + 1);
      const ch = r.pick(HOSTILE);
      l = r.int(3) === 0 ? l.slice(0, at) + l.slice(at + 1) : l.slice(0, at) + ch + l.slice(at + (r.int(2) ? 1 : 0));
    }
  }
  if (r.int(50) === 0) l = r.pick(['# comment', '', '   ', ' \t' + l, '\ufeff' + l, '\u00a0' + l]);
  return l + (r.int(10) === 0 ? '\r' : '');
}

function body(seed: number, lines: number): Buffer {
  const r = random(seed);
  const parts: Buffer[] = [];
  for (let i = 0; i < lines; i++) {
    parts.push(Buffer.from(line(r) + '\n'));
    if (r.int(2000) === 0) parts.push(Buffer.from([0xc3, 0x28, 0x20, 0x76, 0x3d, 0x31, 0x0a])); // invalid UTF-8, alone on a line
  }
  return Buffer.concat(parts);
}

describe('fast path against the full parser', () => {
  it('gives identical tuples and verdicts on 240,000 random and hostile lines, whatever the cache holds', { timeout: 300_000 }, () => {
    let fastRows = 0;
    let lines = 0;
    for (const [seed, precision] of [[1, 'ns'], [2, 'ms'], [3, 's'], [4, 'us'], [5, 'h'], [6, 'ns']] as [number, Precision][]) {
      const b = body(seed, 40_000);
      lines += 40_000;
      const ids = new Ids();
      const ref = reference(b, precision, ids);
      const encoder = new LineEncoder();
      // Everything cached; nothing cached (every line to the full parser); half cached, twice (aliases from the first run).
      const half = ids.index((n) => n % 2 === 0);
      for (const index of [ids.index(), null, new SeriesIndex(), half, half]) {
        const r = fast(b, precision, ids, index, encoder);
        expect(r.verdict.errors).toEqual(ref.errors);
        expect(r.verdict.fieldErrors).toEqual(ref.fieldErrors);
        expect(r.verdict.tuples.length).toBe(ref.tuples.length);
        expect(r.verdict.tuples.join('\n') === ref.tuples.join('\n') || r.verdict.tuples).toBe(true);
        if (index === null) expect(r.fastRows).toBe(0);
        else fastRows += r.fastRows;
      }
    }
    expect(lines).toBe(240_000);
    expect(fastRows).toBeGreaterThan(100_000); // the fast path took a large share, so the comparison covers it
  });

  it('takes the common shapes on the fast path, unsorted tags included (found by their own bytes after the first time)', () => {
    const b = Buffer.from(['sensor,line=L3,cell=C7 value=12.345 1764000000123456789', 'cpu,host=a usage_idle=98.5,usage_user=1i,up=true 1764000000000000000', 'sensor,line=L3,cell=C7 value=-0.5'].join('\n'));
    const ids = new Ids();
    parseLineProtocol(b).points.forEach((p) => p.fields.forEach((f) => ids.of(p, f.key)));
    const index = ids.index();
    const encoder = new LineEncoder();
    const first = encoder.encode(b, 'ns', FACILITY, index, RECEIVE_US, MAX_LINE_BYTES, 10);
    expect([first.rows, first.points.length, first.errors]).toEqual([5, 0, []]);
    expect(index.aliases).toBe(1); // sensor,line=L3,cell=C7 value
    const again = encoder.encode(b, 'ns', FACILITY, index, RECEIVE_US, MAX_LINE_BYTES, 10);
    expect([again.rows, index.aliases]).toEqual([5, 1]);
    expect(both(b, 'ns', ids, index).fast).toEqual(both(b, 'ns', ids, index).ref);
  });

  it('finds every field of a line with unsorted tags when a long field key outgrows its scratch buffer', () => {
    const b = Buffer.from(`m,b=1,a=1 v=1,${'k'.repeat(5000)}=2 5\n`);
    const ids = new Ids();
    parseLineProtocol(b).points.forEach((p) => p.fields.forEach((f) => ids.of(p, f.key)));
    const r = both(b, 'ns', ids, ids.index(), new LineEncoder());
    expect(r.fast).toEqual(r.ref);
    expect(r.fastRows).toBe(2);
  });

  it('keeps no alias beyond its room and still finds the series', () => {
    const b = Buffer.from('m,b=1,a=1 v=1\nm,b=2,a=1 v=1\n');
    const ids = new Ids();
    parseLineProtocol(b).points.forEach((p) => p.fields.forEach((f) => ids.of(p, f.key)));
    const index = ids.index();
    const r = new LineEncoder().encode(b, 'ns', FACILITY, index, RECEIVE_US, MAX_LINE_BYTES, 0);
    expect([r.rows, r.points.length, index.aliases]).toEqual([2, 0, 0]);
  });

  it('agrees on the line length limit and on bodies larger than its slab', () => {
    const big = Buffer.from(Array.from({ length: 60_000 }, (_, i) => `m,t=${i % 100} v=${i}.5 ${i}`).join('\n') + `\nm v=${'1'.repeat(200)}\n`);
    const ids = new Ids();
    parseLineProtocol(big).points.forEach((p) => p.fields.forEach((f) => ids.of(p, f.key)));
    const r = both(big, 'ns', ids, ids.index(), new LineEncoder(), 100);
    expect(r.fast).toEqual(r.ref);
    expect(r.fast.errors).toEqual([{ line: 60_001, reason: 'line is 204 bytes long; the limit is 100' }]);
    expect(r.fastRows).toBe(60_000);
  });
});
