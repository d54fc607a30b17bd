// The one canonical series key format, and the hash both parsers use to find it.
//
// A series (measurement, field key, tag set) is keyed by the bytes a line would spell it with, tags
// sorted by key (UTF-8 byte order):
//     measurement[,tagkey=tagvalue...] fieldkey
// with `\`, `,` and ` ` escaped by a backslash in the measurement, and `\`, `,`, `=` and ` ` in tag
// keys, tag values and the field key. A line with sorted tags and nothing to escape is its own key,
// so the fast path looks its bytes up as they arrived; every other line's key is built here.

const FNV_OFFSET = 0x811c9dc5;
export const FNV_PRIME = 0x01000193;

/** FNV-1a over `bytes[start, end)`, continuing from `h`. */
export function hashBytes(h: number, bytes: Uint8Array, start: number, end: number): number {
  for (let i = start; i < end; i++) h = Math.imul(h ^ bytes[i]!, FNV_PRIME);
  return h;
}

/** FNV-1a of one more byte. */
export function hashByte(h: number, b: number): number {
  return Math.imul(h ^ b, FNV_PRIME);
}

export const HASH_START = FNV_OFFSET;

const MEASUREMENT_SPECIAL = /[\\, ]/;
const NAME_SPECIAL = /[\\,= ]/;
const escape = (s: string, special: RegExp) => (special.test(s) ? s.replace(new RegExp(special.source, 'g'), '\\$&') : s);
/** Below U+D800, UTF-16 code unit order is UTF-8 byte order; surrogates and U+E000–U+FFFF differ. */
const HIGH = /[\ud800-\uffff]/;

/** Tag pairs in canonical order: by key, comparing UTF-8 bytes. */
export function canonicalTags(tags: readonly (readonly [string, string])[]): (readonly [string, string])[] {
  if (tags.length < 2) return [...tags];
  if (!tags.some((t) => HIGH.test(t[0]))) return [...tags].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  return tags
    .map((t) => ({ t, k: Buffer.from(t[0], 'utf8') }))
    .sort((a, b) => Buffer.compare(a.k, b.k))
    .map((x) => x.t);
}

/** The canonical key of (measurement, tags, field) as bytes. */
export function canonicalKey(measurement: string, tags: readonly (readonly [string, string])[], field: string): Buffer {
  let s = escape(measurement, MEASUREMENT_SPECIAL);
  for (const [k, v] of canonicalTags(tags)) s += `,${escape(k, NAME_SPECIAL)}=${escape(v, NAME_SPECIAL)}`;
  return Buffer.from(`${s} ${escape(field, NAME_SPECIAL)}`, 'utf8');
}

/** The hash of a whole key (the head, a space, the field key), as the fast path computes it in parts. */
export function keyHash(key: Uint8Array): number {
  return hashBytes(HASH_START, key, 0, key.length);
}
