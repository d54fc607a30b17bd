// InfluxDB line protocol parser (1.x and 2.x write APIs).
//   measurement[,tag=value...] field=value[,field=value...] [timestamp]
// Escapes: `\,` and `\ ` in measurements; `\,` `\=` `\ ` in tag keys, tag values and field keys;
// `\"` and `\\` in quoted string fields. `#` starts a comment line; blank lines and CRLF are allowed;
// a newline always ends a line (the specification allows none inside values), so a bad line never
// swallows the next.
// A bad line is reported with its number and reason and never stops the lines around it.
// Numeric fields (float, `i` integer, `u` unsigned) and booleans become float8; string fields are
// reported per field. The last of duplicate fields (or tags) wins, as in InfluxDB.

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

const decoder = new TextDecoder('utf-8', { fatal: true });

/** Splits a body into lines on \n (the specification allows no newline inside values); strips a trailing \r. */
function splitLines(text: string): string[] {
  const lines = text.split('\n');
  if (lines.at(-1) === '') lines.pop();
  return lines.map((l) => (l.endsWith('\r') ? l.slice(0, -1) : l));
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

type FieldValue = { value: number } | { error: string };

function fieldValue(raw: string): FieldValue {
  // Floats are by far the most common, so they are tried first with one regular expression.
  if (FLOAT.test(raw)) {
    const v = Number(raw);
    if (!Number.isFinite(v)) return { error: `float ${raw} out of range` };
    return { value: v };
  }
  const last = raw.charCodeAt(raw.length - 1);
  if (last === 0x69 /* i */ && INTEGER.test(raw)) {
    const n = BigInt(raw.slice(0, -1));
    if (n > 9_223_372_036_854_775_807n || n < -9_223_372_036_854_775_808n) return { error: `integer ${raw} out of the int64 range` };
    return { value: Number(n) };
  }
  if (last === 0x75 /* u */ && UNSIGNED.test(raw)) {
    const n = BigInt(raw.slice(0, -1));
    if (n > 18_446_744_073_709_551_615n) return { error: `unsigned ${raw} out of the uint64 range` };
    return { value: Number(n) };
  }
  const b = BOOLEANS.get(raw);
  if (b !== undefined) return { value: b };
  return { error: `invalid field value ${JSON.stringify(raw.length > 40 ? raw.slice(0, 40) + '…' : raw)}` };
}

class LineFault extends Error {}

function parseLine(s: string, line: number, precision: Precision, fieldErrors: LineError[]): ParsedPoint {
  // measurement
  const [measurement, mEnd] = readToken(s, 0, ', ', ', ');
  if (measurement === '') throw new LineFault('missing measurement');
  let i = mEnd;
  const tags = new Map<string, string>();
  while (s[i] === ',') {
    const [key, kEnd] = readToken(s, i + 1, '=, ', ',= ');
    if (s[kEnd] !== '=') throw new LineFault(`tag ${JSON.stringify(key)} has no value`);
    const [value, vEnd] = readToken(s, kEnd + 1, ', ', ',= ');
    if (key === '') throw new LineFault('empty tag key');
    if (value === '') throw new LineFault(`tag ${JSON.stringify(key)} has an empty value`);
    tags.set(key, value);
    i = vEnd;
  }
  if (s[i] !== ' ') throw new LineFault('missing fields');
  while (s[i] === ' ') i++;
  const fields = new Map<string, number>();
  let rejected = 0;
  for (;;) {
    const [key, kEnd] = readToken(s, i, '=, ', ',= ');
    if (key === '') throw new LineFault(i >= s.length ? 'missing fields' : 'empty field key');
    if (s[kEnd] !== '=') throw new LineFault(`field ${JSON.stringify(key)} has no value`);
    i = kEnd + 1;
    if (s[i] === '"') {
      // Quoted string: scan to the closing quote, honouring \" and \\.
      let j = i + 1;
      for (; j < s.length && s[j] !== '"'; j++) if (s[j] === '\\') j++;
      if (j >= s.length) throw new LineFault(`field ${JSON.stringify(key)}: unterminated string`);
      fieldErrors.push({ line, reason: `field ${JSON.stringify(key)}: string values are not accepted (only numbers and booleans)` });
      fields.delete(key);
      rejected++;
      i = j + 1;
    } else {
      let j = i;
      while (j < s.length && s[j] !== ',' && s[j] !== ' ') j++;
      const raw = s.slice(i, j);
      if (raw === '') throw new LineFault(`field ${JSON.stringify(key)} has no value`);
      const v = fieldValue(raw);
      if ('error' in v) throw new LineFault(`field ${JSON.stringify(key)}: ${v.error}`);
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
  return {
    line,
    measurement,
    tags: [...tags].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0)),
    fields: [...fields].map(([key, value]) => ({ key, value })),
    timeNs,
  };
}

/**
 * The common case (no escapes, no quotes, single spaces, every value well formed) with native
 * splits, several times faster than the full parser. Anything else returns null and goes to the
 * full parser, which also writes every error message, so both always agree.
 */
function parseSimple(s: string, line: number, precision: Precision): ParsedPoint | null {
  if (s.includes('\\') || s.includes('"')) return null;
  const parts = s.split(' ');
  if (parts.length < 2 || parts.length > 3) return null;
  const head = parts[0]!.split(',');
  const measurement = head[0]!;
  if (measurement === '') return null;
  const tags = new Map<string, string>();
  for (let i = 1; i < head.length; i++) {
    const t = head[i]!;
    const eq = t.indexOf('=');
    if (eq <= 0 || eq === t.length - 1 || t.indexOf('=', eq + 1) >= 0) return null;
    tags.set(t.slice(0, eq), t.slice(eq + 1));
  }
  const fields = new Map<string, number>();
  for (const f of parts[1]!.split(',')) {
    const eq = f.indexOf('=');
    if (eq <= 0) return null;
    const v = fieldValue(f.slice(eq + 1));
    if ('error' in v) return null;
    fields.set(f.slice(0, eq), v.value);
  }
  let timeNs: bigint | null = null;
  const raw = parts[2];
  if (raw !== undefined) {
    if (!/^-?\d{1,20}$/.test(raw)) return null;
    timeNs = BigInt(raw) * NS_PER[precision];
    if (timeNs > MAX_NS || timeNs < MIN_NS) return null;
  }
  return {
    line,
    measurement,
    tags: tags.size < 2 ? [...tags] : [...tags].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0)),
    fields: [...fields].map(([key, value]) => ({ key, value })),
    timeNs,
  };
}

/** Decodes per line when the body is not valid UTF-8, so one bad line does not reject the rest. */
function decodeLines(body: Uint8Array): { lines: string[]; invalid: Set<number> } {
  try {
    return { lines: splitLines(decoder.decode(body)), invalid: new Set() };
  } catch {
    const latin = splitLines(Buffer.from(body.buffer, body.byteOffset, body.byteLength).toString('latin1'));
    const invalid = new Set<number>();
    const lines = latin.map((l, n) => {
      try {
        return decoder.decode(Buffer.from(l, 'latin1'));
      } catch {
        invalid.add(n);
        return '';
      }
    });
    return { lines, invalid };
  }
}

/** Lines longer than this are rejected by default (1 MiB); a body may hold many lines up to its own limit. */
export const MAX_LINE_CHARS = 1 << 20;

/** `fast: false` skips the fast path (tests compare the two). */
export function parseLineProtocol(body: Uint8Array | string, precision: Precision = 'ns', maxLineChars = MAX_LINE_CHARS, fast = true): ParseResult {
  const { lines, invalid } = typeof body === 'string' ? { lines: splitLines(body), invalid: new Set<number>() } : decodeLines(body);
  const points: ParsedPoint[] = [];
  const errors: LineError[] = [];
  const fieldErrors: LineError[] = [];
  for (let n = 0; n < lines.length; n++) {
    const line = n + 1;
    if (invalid.has(n)) {
      errors.push({ line, reason: 'invalid UTF-8' });
      continue;
    }
    const text = lines[n]!;
    if (text.length > maxLineChars) {
      errors.push({ line, reason: `line is ${text.length} characters long; the limit is ${maxLineChars}` });
      continue;
    }
    const trimmed = text.trimStart();
    if (trimmed === '' || trimmed.startsWith('#')) continue;
    try {
      const p = (fast ? parseSimple(trimmed, line, precision) : null) ?? parseLine(trimmed, line, precision, fieldErrors);
      if (p.fields.length > 0) points.push(p);
    } catch (err) {
      if (!(err instanceof LineFault)) throw err;
      errors.push({ line, reason: err.message });
    }
  }
  return { points, errors, fieldErrors };
}
