// Field values and timestamps read straight from a line's bytes, for the fast path. Each reader
// handles the common forms exactly, leaves the number in `read[0]` and returns true; anything else
// returns false and goes to the full parser (lineprotocol.ts), the reference for every value and
// every error message. (A double in a typed array is never boxed, unlike a returned one.)
//   floats     mantissa < 2^53 and |exp10| ≤ 22: one exact multiply or divide by a power of ten
//              (correctly rounded, as Number() is); other valid floats through Number() on the slice
//   integers   `i` and `u` with up to 15 digits, exact as doubles; longer ones take the full parser
//   booleans   t T true True TRUE f F false False FALSE
//   timestamps microseconds since 1970 as a double, exact while |µs| < 8·10^15 (so µs since 2000 stays below 2^53); the
//              last three digits of ns are dropped with floor semantics for negative times

import { COMMA, SPACE } from './ascii.ts';

/** Where a reader leaves its number. */
export const read = new Float64Array(1);

const POW10 = [1, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22];
const TWO53 = 9_007_199_254_740_992;
const D0 = 48;
const D9 = 57;

const isDigit = (c: number) => c >= D0 && c <= D9;

/** Whether `b[i]` ends a field value: the end of the line, a comma or a space. */
const ends = (b: Uint8Array, i: number, e: number) => i === e || b[i] === COMMA || b[i] === SPACE;

/**
 * Reads the field value starting at `b[s]` (the line ends at `e`) into read[0]; returns where it
 * ends (the comma, space or line end after it), or -1 when it is not one of the fast forms.
 */
export function readValue(b: Uint8Array, s: number, e: number): number {
  if (s >= e) return -1;
  const c = b[s]!;
  if (c === 116 /* t */ || c === 84 /* T */ || c === 102 /* f */ || c === 70 /* F */) {
    let j = s + 1;
    while (j < e && b[j] !== COMMA && b[j] !== SPACE) j++;
    return readBoolean(b, s, j) ? j : -1;
  }
  let i = s;
  let negative = false;
  if (c === 45 || c === 43) {
    negative = c === 45;
    i++;
  }
  let m = 0;
  let digits = 0;
  for (; i < e; i++, digits++) {
    const d = b[i]!;
    if (d < D0 || d > D9) break;
    m = m * 10 + (d - D0);
  }
  const next = i < e ? b[i]! : 0;
  if (next === 105 /* i */ || next === 117 /* u */) {
    // An integer: digits only (a sign for `i` alone), up to 15 of them so the double is exact.
    if (digits === 0 || digits > 15 || (next === 117 && (c === 45 || c === 43)) || !ends(b, i + 1, e)) return -1;
    read[0] = negative && m !== 0 ? -m : m; // an integer has no negative zero
    return i + 1;
  }
  let scale = 0;
  if (next === 46 /* . */) {
    for (i++; i < e; i++, digits++, scale++) {
      const d = b[i]!;
      if (d < D0 || d > D9) break;
      m = m * 10 + (d - D0);
    }
  }
  if (digits === 0) return -1;
  let exp = 0;
  if (i < e && (b[i] === 101 || b[i] === 69)) {
    i++;
    let expNegative = false;
    if (b[i] === 45 || b[i] === 43) expNegative = b[i++] === 45;
    const from = i;
    for (; i < e && isDigit(b[i]!) && i - from < 6; i++) exp = exp * 10 + (b[i]! - D0);
    if (i === from) return -1;
    if (expNegative) exp = -exp;
  }
  if (!ends(b, i, e)) return -1;
  const e10 = exp - scale;
  if (m <= TWO53 && e10 >= -22 && e10 <= 22) {
    const v = e10 >= 0 ? m * POW10[e10]! : m / POW10[-e10]!;
    read[0] = negative ? -v : v;
    return i;
  }
  const v = Number(Buffer.from(b.buffer, b.byteOffset + s, i - s).toString('latin1'));
  if (!Number.isFinite(v)) return -1;
  read[0] = v;
  return i;
}

function readBoolean(b: Uint8Array, s: number, e: number): boolean {
  const n = e - s;
  const c = b[s]!;
  const truthy = c === 116 || c === 84;
  read[0] = truthy ? 1 : 0;
  if (n === 1) return true;
  const word = truthy ? 'true' : 'false';
  if (n !== word.length) return false;
  // Accepted: all lower case, capitalised, or all upper case.
  const upper = b[s + 1]! < 97;
  for (let i = 1; i < n; i++) {
    const want = word.charCodeAt(i) - (upper ? 32 : 0);
    if (b[s + i] !== want) return false;
  }
  return !(upper && c >= 97); // not tRUE
}

/** µs per unit of each precision. */
const US_PER: Record<string, number> = { us: 1, ms: 1e3, s: 1e6, m: 6e7, h: 3.6e9 };
/** |µs| below this keeps both Unix and PostgreSQL (2000-based) µs exact in a double (years 1717–2223). */
const SAFE_US = 8e15;

/** Reads a timestamp `b[s, e)` in `precision` as µs since 1970 into read[0]. */
export function readTimeUs(b: Uint8Array, s: number, e: number, precision: string): boolean {
  let i = s;
  const negative = b[i] === 45;
  if (negative) i++;
  const n = e - i;
  if (n < 1 || n > 19) return false;
  if (precision === 'ns') {
    // Whole µs from all digits but the last three (in two integer halves: cheaper than a double per
    // digit); the last three only decide the floor of a negative time.
    const cut = e - 3;
    const mid = Math.max(i, cut - 8);
    let high = 0;
    let low = 0;
    let rest = 0;
    for (; i < mid; i++) {
      const d = b[i]! - D0;
      if (d < 0 || d > 9) return false;
      high = high * 10 + d;
    }
    for (; i < cut; i++) {
      const d = b[i]! - D0;
      if (d < 0 || d > 9) return false;
      low = low * 10 + d;
    }
    for (; i < e; i++) {
      const d = b[i]! - D0;
      if (d < 0 || d > 9) return false;
      rest = rest * 10 + d;
    }
    const us = high * 1e8 + low;
    if (us >= SAFE_US) return false;
    read[0] = negative ? -us - (rest > 0 ? 1 : 0) : us;
    return true;
  }
  if (n > 16) return false;
  let v = 0;
  for (; i < e; i++) {
    const d = b[i]!;
    if (!isDigit(d)) return false;
    v = v * 10 + (d - D0);
  }
  const us = v * US_PER[precision]!;
  if (us >= SAFE_US) return false;
  read[0] = negative ? -us : us;
  return true;
}
