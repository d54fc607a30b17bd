// The line protocol parser against a table of specification cases.
import { describe, expect, it } from 'vitest';
import { parseLineProtocol, type Precision } from '../src/ingest/lineprotocol.ts';

type Case = [string, string, { m: string; tags?: [string, string][]; fields: Record<string, number>; t?: bigint | null }[]];

const ok: Case[] = [
  ['measurement and one field', 'cpu value=1', [{ m: 'cpu', fields: { value: 1 } }]],
  ['tags sorted, timestamp', 'cpu,region=us,host=a value=1.5 1700000000000000000', [{ m: 'cpu', tags: [['host', 'a'], ['region', 'us']], fields: { value: 1.5 }, t: 1700000000000000000n }]],
  ['escaped measurement, tag key and value, field key', 'c\\,p\\ u,t\\ k=v\\=1\\,x f\\,k=2i,f\\=k=3', [{ m: 'c,p u', tags: [['t k', 'v=1,x']], fields: { 'f,k': 2, 'f=k': 3 } }]],
  ['backslash not before an escapable character stays', 'm,t=a\\b v=1', [{ m: 'm', tags: [['t', 'a\\b']], fields: { v: 1 } }]],
  ['booleans in every spelling', 'm a=t,b=T,c=true,d=True,e=TRUE,f=f,g=F,h=false,i=False,j=FALSE', [{ m: 'm', fields: { a: 1, b: 1, c: 1, d: 1, e: 1, f: 0, g: 0, h: 0, i: 0, j: 0 } }]],
  ['integer, unsigned and float forms', 'm a=-42i,b=18446744073709551615u,c=1e3,d=-.5,e=+2.,f=6.02E23', [{ m: 'm', fields: { a: -42, b: 18446744073709551615, c: 1000, d: -0.5, e: 2, f: 6.02e23 } }]],
  ['the last duplicate field wins', 'm a=1,b=2,a=3', [{ m: 'm', fields: { a: 3, b: 2 } }]],
  ['negative timestamp', 'm v=1 -1000', [{ m: 'm', fields: { v: 1 }, t: -1000n }]],
  ['extra spaces between sections and after the timestamp', 'm   v=1   123   ', [{ m: 'm', fields: { v: 1 }, t: 123n }]],
  ['leading whitespace', '   m v=1', [{ m: 'm', fields: { v: 1 } }]],
  ['comments, blank lines and CRLF', '# a comment\r\n\r\nm v=1\r\n   \r\n# m v=9\nm v=2\r\n', [{ m: 'm', fields: { v: 1 } }, { m: 'm', fields: { v: 2 } }]],
  ['measurement with an equals sign', 'a=b v=1', [{ m: 'a=b', fields: { v: 1 } }]],
];

describe('line protocol: accepted lines', () => {
  it.each(ok)('%s', (_name, input, want) => {
    const r = parseLineProtocol(input);
    expect(r.errors).toEqual([]);
    expect(r.points.map((p) => ({ m: p.measurement, tags: p.tags, fields: Object.fromEntries(p.fields.map((f) => [f.key, f.value])), t: p.timeNs }))).toEqual(
      want.map((w) => ({ m: w.m, tags: w.tags ?? [], fields: w.fields, t: w.t ?? null })),
    );
  });

  it.each([
    ['ns', 1n],
    ['us', 1_000n],
    ['ms', 1_000_000n],
    ['s', 1_000_000_000n],
    ['m', 60_000_000_000n],
    ['h', 3_600_000_000_000n],
  ] as [Precision, bigint][])('honours precision %s', (precision, factor) => {
    const r = parseLineProtocol('m v=1 1700', precision);
    expect(r.points[0]!.timeNs).toBe(1700n * factor);
  });

  it('rejects string fields per field and keeps the line\'s other fields', () => {
    const r = parseLineProtocol('m s="hello, \\"world\\" a=b",v=1\nm only="x"\nm v=2');
    expect(r.errors).toEqual([]);
    expect(r.points.map((p) => [p.line, p.fields])).toEqual([
      [1, [{ key: 'v', value: 1 }]],
      [3, [{ key: 'v', value: 2 }]],
    ]);
    expect(r.fieldErrors).toEqual([
      { line: 1, reason: 'field "s": string values are not accepted (only numbers and booleans)' },
      { line: 2, reason: 'field "only": string values are not accepted (only numbers and booleans)' },
    ]);
  });

  it('keeps a newline inside a quoted string in the string: no point the client never sent', () => {
    const r = parseLineProtocol('m s="x\nphantom v=1\n",v=2 5\nm v=3 6\n');
    expect(r.errors).toEqual([]);
    expect(r.points.map((p) => [p.line, p.fields, p.timeNs])).toEqual([
      [1, [{ key: 'v', value: 2 }], 5n],
      [4, [{ key: 'v', value: 3 }], 6n],
    ]);
    expect(r.fieldErrors).toEqual([{ line: 1, reason: 'field "s": string values are not accepted (only numbers and booleans)' }]);
  });

  it('opens a string only at a field value: quotes in names and comments are plain characters', () => {
    const r = parseLineProtocol('m"a,t="b" v=1\n# "note\nm v=1"x\nm v=2\n');
    expect(r.points.map((p) => [p.line, p.measurement, p.tags])).toEqual([
      [1, 'm"a', [['t', '"b"']]],
      [4, 'm', []],
    ]);
    expect(r.errors).toEqual([{ line: 3, reason: 'field "v": invalid field value "1\\"x"' }]);
  });

  it('takes a joined line back to its first line when it does not parse, so a later quote cannot swallow good lines', () => {
    // The quote opened on line 1 seems closed on line 2; joined, the two do not parse.
    const r = parseLineProtocol('m s="x\nm v=1,s="y"\nm v=2\n');
    expect(r.errors).toEqual([{ line: 1, reason: 'field "s": unterminated string' }]);
    expect(r.points.map((p) => [p.line, p.fields])).toEqual([
      [2, [{ key: 'v', value: 1 }]],
      [3, [{ key: 'v', value: 2 }]],
    ]);
  });

  it('ends a line at every newline, so an unterminated string cannot swallow the next line', () => {
    const r = parseLineProtocol('m s="two\nm v=2 6');
    expect(r.errors).toEqual([{ line: 1, reason: 'field "s": unterminated string' }]);
    expect(r.points.map((p) => [p.line, p.timeNs])).toEqual([[2, 6n]]);
  });
});

const bad: [string, string, string][] = [
  ['no fields', 'cpu', 'missing fields'],
  ['no fields after tags', 'cpu,host=a', 'missing fields'],
  ['tag without value', 'm,t v=1', 'tag "t" has no value'],
  ['empty tag value', 'm,t= v=1', 'tag "t" has an empty value'],
  ['empty tag key', 'm,=x v=1', 'empty tag key'],
  ['missing measurement', ',t=1 v=1', 'missing measurement'],
  ['field without value', 'm v=', 'field "v" has no value'],
  ['field without equals', 'm v', 'field "v" has no value'],
  ['invalid field value', 'm v=abc', 'field "v": invalid field value "abc"'],
  ['a field value naming an Object property', 'm v=toString', 'field "v": invalid field value "toString"'],
  ['another Object property', 'm v=__proto__', 'field "v": invalid field value "__proto__"'],
  ['integer overflow', 'm v=9223372036854775808i', 'field "v": integer 9223372036854775808i out of the int64 range'],
  ['negative unsigned', 'm v=-1u', 'field "v": invalid field value "-1u"'],
  ['unterminated string', 'm v="abc', 'field "v": unterminated string'],
  ['invalid timestamp', 'm v=1 12x', 'invalid timestamp "12x"'],
  ['text after the timestamp', 'm v=1 1 extra', 'unexpected text after the timestamp: "extra"'],
  ['timestamp out of range', 'm v=1 9999999999999', 'timestamp 9999999999999 (precision s) is out of range (years 1677–2262)'],
  ['a tag key given twice', 'cpu,b=2,c=3,b=1 value=1i', 'duplicate tag "b"'],
  ['time as a tag key', 'm,time=1 v=1', '"time" cannot be a tag key'],
  ['time as a field key', 'm time=1,v=1', '"time" cannot be a field key'],
  ['a field given twice with two types', 'm v=1,v=2i', 'field "v" is given twice, as float and as integer'],
  ['a field given as string and number', 'm v="x",v=true', 'field "v" is given twice, as string and as boolean'],
  ['NUL in the measurement', 'm\u0000x v=1', 'measurement "m\\u0000x" holds a NUL byte, which cannot be stored'],
  ['NUL in a tag key', 'm,t\u0000=a v=1', 'tag key "t\\u0000" holds a NUL byte, which cannot be stored'],
  ['NUL in a tag value', 'm,t=a\u0000b v=1', 'the value of tag "t" holds a NUL byte, which cannot be stored'],
  ['NUL in a field key', 'm v\u0000=1', 'field key "v\\u0000" holds a NUL byte, which cannot be stored'],
];

describe('line protocol: rejected lines', () => {
  it.each(bad)('%s', (_name, input, reason) => {
    const precision: Precision = reason.includes('precision s') ? 's' : 'ns';
    const r = parseLineProtocol(`ok v=1\n${input}\nok v=2`, precision);
    expect(r.errors).toEqual([{ line: 2, reason }]);
    expect(r.points.map((p) => p.line)).toEqual([1, 3]);
  });

  it('rejects only the line holding invalid UTF-8', () => {
    const body = Buffer.concat([Buffer.from('m v=1\nm,t='), Buffer.from([0xff, 0xfe]), Buffer.from(' v=2\nm,t=ü v=3\n')]);
    const r = parseLineProtocol(body);
    expect(r.errors).toEqual([{ line: 2, reason: 'invalid UTF-8' }]);
    expect(r.points.map((p) => [p.line, p.tags])).toEqual([
      [1, []],
      [3, [['t', 'ü']]],
    ]);
  });

  it('never throws on arbitrary input', () => {
    let seed = 12345;
    const rand = () => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff);
    const alphabet = 'ab=, \\"\n\r#0123456789.eEiu-+tf';
    for (let n = 0; n < 5000; n++) {
      const len = Math.floor(rand() * 40);
      let s = '';
      for (let i = 0; i < len; i++) s += alphabet[Math.floor(rand() * alphabet.length)];
      expect(() => parseLineProtocol(Buffer.from(s))).not.toThrow();
    }
  });
});

describe('line length limit', () => {
  it('rejects an over-long line by number and parses its neighbours', async () => {
    const { parseLineProtocol } = await import('../src/ingest/lineprotocol.ts');
    const r = parseLineProtocol(`a v=1\nb v=${'1'.repeat(100)}\nc v=3\n`, 'ns', 50);
    expect(r.errors).toEqual([{ line: 2, reason: 'line is 104 bytes long; the limit is 50' }]);
    expect(r.points.map((p) => p.measurement)).toEqual(['a', 'c']);
  });
});
