// InfluxDB line protocol: the full parser (1.x and 2.x write APIs). It is the reference: it handles
// every line the byte-level fast path (line-encoder.ts) does not, and writes every error message.
//   measurement[,tag=value...] field=value[,field=value...] [timestamp]
// Escapes: `\,` and `\ ` in measurements; `\,` `\=` `\ ` in tag keys, tag values and field keys;
// `\"` and `\\` in quoted string fields. `#` starts a comment line; blank lines and CRLF are allowed.
// Lines are found by line-scan.ts (a newline inside a quoted string belongs to the string).
// A bad line is reported with its number and reason and never stops the lines around it.
// Numeric fields (float, `i` integer, `u` unsigned) and booleans become float8; string fields are
// reported per field. As in InfluxDB, a tag key given twice rejects the line, `time` is refused as a
// tag or field key, and a field given twice with two types rejects the line; given twice with one
// type, the last value wins. NUL bytes are refused in names (PostgreSQL cannot store them).
import { isUtf8 } from 'node:buffer';
import { forEachLine } from './line-scan.ts';

export type Precision = 'ns' | 'us' | 'ms' | 's' | 'm' | 'h';

/** Nanoseconds per unit of each precision (`u` is accepted as `us` by callers). */
export const NS_PER: Record<Precision, bigint> = { ns: 1n, us: 1_000n, ms: 1_000_000n, s: 1_000_000_000n, m: 60_000_000_000n, h: 3_600_000_000_000n };

const MAX_NS = 9_223_372_036_854_775_806n; // InfluxDB's accepted timestamp range (int64 ns, minus sentinels)
const MIN_NS = -9_223_372_036_854_775_806n;

export interface ParsedPoint {
  line: number;
  measurement: string;
  /** Sorted by key. */
  tags: [string, string][];
  fields: { key: string; value: number }[];
  /** Nanoseconds since the epoch, or null when the line has none (the receive time applies). */
  timeNs: bigint | null;
}

export interface LineError {
  line: number;
  reason: string;
}

export interface ParseResult {
  points: ParsedPoint[];
  /** Whole lines rejected. */
  errors: LineError[];
  /** Fields rejected on lines whose other fields were accepted (string fields). */
  fieldErrors: LineError[];
}

/** Reads up to an unescaped stop character; returns [unescaped text, index of the stop or end]. */
function readToken(s: string, i: number, stops: string, escapable: string): [string, number] {
  let out = '';
  let from = i;
  for (; i < s.length; i++) {
    const ch = s[i]!;
    if (ch === '\\' && i + 1 < s.length && escapable.includes(s[i + 1]!)) {
      out += s.slice(from, i);
      from = i + 1;
      i++;
      continue;
    }
    if (stops.includes(ch)) break;
  }
  return [out + s.slice(from, i), i];
}

const BOOLEANS = new Map<string, number>(Object.entries({ t: 1, T: 1, true: 1, True: 1, TRUE: 1, f: 0, F: 0, false: 0, False: 0, FALSE: 0 }));
const FLOAT = /^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/;
const INTEGER = /^[-+]?\d+i$/;
const UNSIGNED = /^\d+u$/;

type FieldType = 'float' | 'integer' | 'unsigned' | 'boolean' | 'string';
type FieldValue = { value: number; type: FieldType } | { error: string };

function fieldValue(raw: string): FieldValue {
  // Floats are by far the most common, so they are tried first with one regular expression.
  if (FLOAT.test(raw)) {
    const v = Number(raw);
    if (!Number.isFinite(v)) return { error: `float ${raw} out of range` };
    return { value: v, type: 'float' };
  }
  const last = raw.charCodeAt(raw.length - 1);
  if (last === 0x69 /* i */ && INTEGER.test(raw)) {
    const n = BigInt(raw.slice(0, -1));
    if (n > 9_223_372_036_854_775_807n || n < -9_223_372_036_854_775_808n) return { error: `integer ${raw} out of the int64 range` };
    return { value: Number(n), type: 'integer' };
  }
  if (last === 0x75 /* u */ && UNSIGNED.test(raw)) {
    const n = BigInt(raw.slice(0, -1));
    if (n > 18_446_744_073_709_551_615n) return { error: `unsigned ${raw} out of the uint64 range` };
    return { value: Number(n), type: 'unsigned' };
  }
  const b = BOOLEANS.get(raw);
  if (b !== undefined) return { value: b, type: 'boolean' };
  return { error: `invalid field value ${JSON.stringify(raw.length > 40 ? raw.slice(0, 40) + '…' : raw)}` };
}

class LineFault extends Error {}

const quoted = (s: string) => JSON.stringify(s.length > 40 ? s.slice(0, 40) + '…' : s);

/** Refuses a NUL byte in a name: PostgreSQL cannot store one in text or jsonb. */
function noNul(what: string, value: string): void {
  if (value.includes('\u0000')) throw new LineFault(`${what} holds a NUL byte, which cannot be stored`);
}

function parseLine(s: string, line: number, precision: Precision, fieldErrors: LineError[]): ParsedPoint {
  // measurement
  const [measurement, mEnd] = readToken(s, 0, ', ', ', ');
  if (measurement === '') throw new LineFault('missing measurement');
  noNul(`measurement ${quoted(measurement)}`, measurement);
  let i = mEnd;
  const tags = new Map<string, string>();
  while (s[i] === ',') {
    const [key, kEnd] = readToken(s, i + 1, '=, ', ',= ');
    if (s[kEnd] !== '=') throw new LineFault(`tag ${quoted(key)} has no value`);
    const [value, vEnd] = readToken(s, kEnd + 1, ', ', ',= ');
    if (key === '') throw new LineFault('empty tag key');
    if (value === '') throw new LineFault(`tag ${quoted(key)} has an empty value`);
    if (key === 'time') throw new LineFault('"time" cannot be a tag key');
    if (tags.has(key)) throw new LineFault(`duplicate tag ${quoted(key)}`);
    noNul(`tag key ${quoted(key)}`, key);
    noNul(`the value of tag ${quoted(key)}`, value);
    tags.set(key, value);
    i = vEnd;
  }
  if (s[i] !== ' ') throw new LineFault('missing fields');
  while (s[i] === ' ') i++;
  const fields = new Map<string, number>();
  const types = new Map<string, FieldType>();
  const typed = (key: string, type: FieldType) => {
    const before = types.get(key);
    if (before !== undefined && before !== type) throw new LineFault(`field ${quoted(key)} is given twice, as ${before} and as ${type}`);
    types.set(key, type);
  };
  let rejected = 0;
  for (;;) {
    const [key, kEnd] = readToken(s, i, '=, ', ',= ');
    if (key === '') throw new LineFault(i >= s.length ? 'missing fields' : 'empty field key');
    if (s[kEnd] !== '=') throw new LineFault(`field ${quoted(key)} has no value`);
    if (key === 'time') throw new LineFault('"time" cannot be a field key');
    noNul(`field key ${quoted(key)}`, key);
    i = kEnd + 1;
    if (s[i] === '"') {
      // Quoted string: scan to the closing quote, honouring \" and \\.
      let j = i + 1;
      for (; j < s.length && s[j] !== '"'; j++) if (s[j] === '\\') j++;
      if (j >= s.length) throw new LineFault(`field ${quoted(key)}: unterminated string`);
      typed(key, 'string');
      rejected++;
      i = j + 1;
    } else {
      let j = i;
      while (j < s.length && s[j] !== ',' && s[j] !== ' ') j++;
      const raw = s.slice(i, j);
      if (raw === '') throw new LineFault(`field ${quoted(key)} has no value`);
      const v = fieldValue(raw);
      if ('error' in v) throw new LineFault(`field ${quoted(key)}: ${v.error}`);
      typed(key, v.type);
      fields.set(key, v.value);
      i = j;
    }
    if (s[i] === ',') {
      i++;
      continue;
    }
    break;
  }
  let timeNs: bigint | null = null;
  while (s[i] === ' ') i++;
  if (i < s.length) {
    let j = i;
    while (j < s.length && s[j] !== ' ') j++;
    const raw = s.slice(i, j);
    while (j < s.length && s[j] === ' ') j++;
    if (j < s.length) throw new LineFault(`unexpected text after the timestamp: ${JSON.stringify(s.slice(j, j + 20))}`);
    if (!/^-?\d{1,20}$/.test(raw)) throw new LineFault(`invalid timestamp ${JSON.stringify(raw.slice(0, 30))}`);
    timeNs = BigInt(raw) * NS_PER[precision];
    if (timeNs > MAX_NS || timeNs < MIN_NS) throw new LineFault(`timestamp ${raw} (precision ${precision}) is out of range (years 1677–2262)`);
  }
  if (fields.size === 0 && rejected === 0) throw new LineFault('missing fields');
  for (const key of types.keys()) {
    if (types.get(key) === 'string') fieldErrors.push({ line, reason: `field ${quoted(key)}: string values are not accepted (only numbers and booleans)` });
  }
  return {
    line,
    measurement,
    tags: [...tags].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0)),
    fields: [...fields].map(([key, value]) => ({ key, value })),
    timeNs,
  };
}

/** Lines longer than this many bytes are rejected by default (1 MiB); a body may hold many lines up to its own limit. */
export const MAX_LINE_BYTES = 1 << 20;

/**
 * Parses the line at `body[start, end)` into `out`. `checkUtf8` when the body as a whole is not
 * valid UTF-8 (then each line is checked on its own, so one bad line does not reject the rest).
 * A `joined` line (one spanning newlines inside a string, line-scan.ts) that does not parse is not
 * recorded: false tells the scanner to take back its first physical line alone.
 */
export function parseLineAt(body: Uint8Array, start: number, end: number, line: number, precision: Precision, maxLineBytes: number, checkUtf8: boolean, out: ParseResult, joined = false): boolean {
  if (joined) {
    const alone: ParseResult = { points: [], errors: [], fieldErrors: [] };
    parseLineAt(body, start, end, line, precision, maxLineBytes, checkUtf8, alone);
    if (alone.errors.length > 0) return false;
    out.points.push(...alone.points);
    out.fieldErrors.push(...alone.fieldErrors);
    return true;
  }
  if (end - start > maxLineBytes) {
    out.errors.push({ line, reason: `line is ${end - start} bytes long; the limit is ${maxLineBytes}` });
    return true;
  }
  const bytes = body.subarray(start, end);
  if (checkUtf8 && !isUtf8(bytes)) {
    out.errors.push({ line, reason: 'invalid UTF-8' });
    return true;
  }
  const text = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('utf8').trimStart();
  if (text === '' || text.startsWith('#')) return true;
  const fieldErrors: LineError[] = [];
  try {
    const p = parseLine(text, line, precision, fieldErrors);
    if (p.fields.length > 0) out.points.push(p);
    for (const e of fieldErrors) out.fieldErrors.push(e);
  } catch (err) {
    if (!(err instanceof LineFault)) throw err;
    out.errors.push({ line, reason: err.message });
  }
  return true;
}

/** The full parser over a whole body (the reference the fast path is tested against). */
export function parseLineProtocol(body: Uint8Array | string, precision: Precision = 'ns', maxLineBytes = MAX_LINE_BYTES): ParseResult {
  const bytes = typeof body === 'string' ? Buffer.from(body, 'utf8') : body;
  const out: ParseResult = { points: [], errors: [], fieldErrors: [] };
  const checkUtf8 = !isUtf8(bytes);
  forEachLine(bytes, (start, end, line, joined) => parseLineAt(bytes, start, end, line, precision, maxLineBytes, checkUtf8, out, joined));
  return out;
}
