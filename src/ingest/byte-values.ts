// Field values and timestamps read straight from a line's bytes, for the fast path. Each reader
// handles the common forms exactly and returns NOT_FAST for anything else, which then goes to the
// full parser (lineprotocol.ts), the reference for every value and every error message.
//   floats     mantissa < 2^53 and |exp10| ≤ 22: one exact multiply or divide by a power of ten
//              (correctly rounded, as Number() is); other valid floats through Number() on the slice
//   integers   `i` and `u` with up to 15 digits, exact as doubles; longer ones take the full parser
//   booleans   t T true True TRUE f F false False FALSE
//   timestamps microseconds since 1970 as a double, exact while |µs| < 8·10^15 (so µs since 2000 stays below 2^53); the
//              last three digits of ns are dropped with floor semantics for negative times

export const NOT_FAST = Symbol('not fast');

const POW10 = [1, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22];
const TWO53 = 9_007_199_254_740_992;
const D0 = 48;
const D9 = 57;

const isDigit = (c: number) => c >= D0 && c <= D9;

/** Reads a field value in `b[s, e)` (e > s); a number, or NOT_FAST. */
export function readValue(b: Uint8Array, s: number, e: number): number | typeof NOT_FAST {
  const c = b[s]!;
  const last = b[e - 1]!;
  if (c === 116 /* t */ || c === 84 /* T */ || c === 102 /* f */ || c === 70 /* F */) return readBoolean(b, s, e);
  if (last === 105 /* i */) return readInteger(b, s, e - 1, true);
  if (last === 117 /* u */) return readInteger(b, s, e - 1, false);
  return readFloat(b, s, e);
}

function readInteger(b: Uint8Array, s: number, e: number, signed: boolean): number | typeof NOT_FAST {
  let i = s;
  let negative = false;
  if (signed && (b[i] === 45 || b[i] === 43)) negative = b[i++] === 45;
  if (i === e || e - i > 15) return NOT_FAST;
  let v = 0;
  for (; i < e; i++) {
    const d = b[i]!;
    if (!isDigit(d)) return NOT_FAST;
    v = v * 10 + (d - D0);
  }
  return negative && v !== 0 ? -v : v; // an integer has no negative zero
}

function readFloat(b: Uint8Array, s: number, e: number): number | typeof NOT_FAST {
  let i = s;
  let negative = false;
  if (b[i] === 45 || b[i] === 43) negative = b[i++] === 45;
  let m = 0;
  let digits = 0;
  let scale = 0;
  for (; i < e && isDigit(b[i]!); i++, digits++) m = m * 10 + (b[i]! - D0);
  if (i < e && b[i] === 46 /* . */) {
    for (i++; i < e && isDigit(b[i]!); i++, digits++, scale++) m = m * 10 + (b[i]! - D0);
  }
  if (digits === 0) return NOT_FAST;
  let exp = 0;
  if (i < e && (b[i] === 101 || b[i] === 69)) {
    i++;
    let expNegative = false;
    if (b[i] === 45 || b[i] === 43) expNegative = b[i++] === 45;
    const from = i;
    for (; i < e && isDigit(b[i]!) && i - from < 6; i++) exp = exp * 10 + (b[i]! - D0);
    if (i === from) return NOT_FAST;
    if (expNegative) exp = -exp;
  }
  if (i !== e) return NOT_FAST;
  const e10 = exp - scale;
  let v: number;
  if (m <= TWO53 && e10 >= -22 && e10 <= 22) v = e10 >= 0 ? m * POW10[e10]! : m / POW10[-e10]!;
  else {
    v = Number(Buffer.from(b.buffer, b.byteOffset + s, e - s).toString('latin1'));
    if (!Number.isFinite(v)) return NOT_FAST;
    return v;
  }
  return negative ? -v : v;
}

function readBoolean(b: Uint8Array, s: number, e: number): number | typeof NOT_FAST {
  const n = e - s;
  const c = b[s]!;
  const truthy = c === 116 || c === 84;
  if (n === 1) return truthy ? 1 : 0;
  const word = truthy ? 'true' : 'false';
  if (n !== word.length) return NOT_FAST;
  // Accepted: all lower case, capitalised, or all upper case.
  const upper = b[s + 1]! < 97;
  for (let i = 1; i < n; i++) {
    const want = word.charCodeAt(i) - (upper ? 32 : 0);
    if (b[s + i] !== want) return NOT_FAST;
  }
  if (upper && c >= 97) return NOT_FAST; // tRUE
  return truthy ? 1 : 0;
}

/** µs per unit of each precision. */
const US_PER: Record<string, number> = { us: 1, ms: 1e3, s: 1e6, m: 6e7, h: 3.6e9 };
/** |µs| below this keeps both Unix and PostgreSQL (2000-based) µs exact in a double (years 1717–2223). */
const SAFE_US = 8e15;

/** Reads a timestamp `b[s, e)` in `precision` as µs since 1970, or NOT_FAST. */
export function readTimeUs(b: Uint8Array, s: number, e: number, precision: string): number | typeof NOT_FAST {
  let i = s;
  const negative = b[i] === 45;
  if (negative) i++;
  const n = e - i;
  if (n < 1 || n > 19) return NOT_FAST;
  if (precision === 'ns') {
    // Whole µs from all digits but the last three; those three only decide the floor of a negative time.
    let us = 0;
    let rest = 0;
    const cut = e - 3;
    for (; i < e; i++) {
      const d = b[i]!;
      if (!isDigit(d)) return NOT_FAST;
      if (i < cut) us = us * 10 + (d - D0);
      else rest = rest * 10 + (d - D0);
    }
    if (us >= SAFE_US) return NOT_FAST;
    return negative ? -us - (rest > 0 ? 1 : 0) : us;
  }
  if (n > 16) return NOT_FAST;
  let v = 0;
  for (; i < e; i++) {
    const d = b[i]!;
    if (!isDigit(d)) return NOT_FAST;
    v = v * 10 + (d - D0);
  }
  const us = v * US_PER[precision]!;
  if (us >= SAFE_US) return NOT_FAST;
  return negative ? -us : us;
}
