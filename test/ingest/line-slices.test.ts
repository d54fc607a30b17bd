// A large body encoded a slice at a time gives what the whole body gives: the same tuples, points
// and rejected lines, numbered from the start of the body.
import { describe, expect, it } from 'vitest';
import { LineEncoder } from '../../src/ingest/line-encoder.ts';
import { mergeEncoded, renumber, sliceLines } from '../../src/ingest/line-slices.ts';
import { MAX_LINE_BYTES, parseLineProtocol } from '../../src/ingest/lineprotocol.ts';
import { SeriesIndex } from '../../src/ingest/series-index.ts';
import { canonicalKey, keyHash } from '../../src/ingest/series-key.ts';

const RECEIVE_US = 1_764_000_000_123_456;

function body(lines: number): Buffer {
  const out: string[] = [];
  for (let i = 0; i < lines; i++) {
    if (i % 997 === 5) out.push(`bad line ${i} =`);
    else if (i % 1301 === 7) out.push('');
    else out.push(`press,line=l${i % 40},unit=u${i % 3} v=${i}.5,w=${i % 7}i ${1_700_000_000_000_000_000n + BigInt(i) * 1_000_000_000n}${i % 2 ? '\r' : ''}`);
  }
  return Buffer.from(out.join('\n') + '\n');
}

function encode(b: Buffer, index: SeriesIndex | null) {
  return new LineEncoder().encode(b, 'ns', 3, index, RECEIVE_US, MAX_LINE_BYTES, 1 << 20);
}

function sliced(b: Buffer, bytes: number, index: SeriesIndex | null) {
  const slices = sliceLines(b, bytes);
  return { slices, encoded: mergeEncoded(slices.map((s) => renumber(encode(b.subarray(s.start, s.end), index), s.lineOffset))) };
}

describe('line slices', () => {
  it('cut only after newlines, cover the body, and count the lines before each', () => {
    const b = body(5_000);
    const { slices } = sliced(b, 16 << 10, null);
    expect(slices.length).toBeGreaterThan(10);
    expect(slices[0]!.start).toBe(0);
    expect(slices.at(-1)!.end).toBe(b.length);
    for (let i = 1; i < slices.length; i++) {
      expect(slices[i]!.start).toBe(slices[i - 1]!.end);
      expect(b[slices[i]!.start - 1]).toBe(10);
      expect(slices[i]!.lineOffset).toBe(b.subarray(0, slices[i]!.start).toString('latin1').split('\n').length - 1);
    }
  });

  it('give the whole body\'s points and rejected lines, numbered from its start, on the full parser', () => {
    const b = body(5_000);
    const whole = encode(b, null);
    const { encoded } = sliced(b, 16 << 10, null);
    expect(encoded.errors).toEqual(whole.errors);
    expect(encoded.errors.length).toBeGreaterThan(3);
    expect(encoded.points).toEqual(whole.points);
    expect(encoded.points).toEqual(parseLineProtocol(b.toString('utf8'), 'ns').points);
  });

  it('give the whole body\'s tuples on the fast path', () => {
    const b = body(5_000);
    const index = new SeriesIndex();
    let id = 1;
    for (const p of parseLineProtocol(b.toString('utf8'), 'ns').points) {
      for (const f of p.fields) {
        const key = canonicalKey(p.measurement, p.tags, f.key);
        if (index.get(key, keyHash(key)) === -1) index.add(key, keyHash(key), id++);
      }
    }
    const whole = encode(b, index);
    const { encoded } = sliced(b, 16 << 10, index);
    expect(whole.rows).toBeGreaterThan(8_000);
    expect(encoded.rows).toBe(whole.rows);
    expect(encoded.tuples.equals(whole.tuples)).toBe(true);
    expect(encoded.errors).toEqual(whole.errors);
  });

  it('keep a body with a quoted string whole: a newline inside a string belongs to its line', () => {
    const b = Buffer.from(`${'m v=1\n'.repeat(5_000)}m s="two\nlines"\n${'m v=2\n'.repeat(5_000)}`);
    expect(sliceLines(b, 1 << 10)).toEqual([{ start: 0, end: b.length, lineOffset: 0 }]);
  });
});
