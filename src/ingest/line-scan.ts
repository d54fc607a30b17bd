// Where each line of a line-protocol body begins and ends, on bytes. One scanner serves both the
// fast path and the full parser, so they always see the same lines.
//
// A line ends at `\n` (a `\r` before it is dropped), except inside a quoted string field value: there
// a newline belongs to the string, as in InfluxDB. A string opens at a `"` right after the `=` of a
// field (the fields section begins at the first unescaped space) and closes at the next unescaped
// `"`. A string still open at the end of the body is unterminated: its line then ends at its first
// newline. A line joined across newlines that the parser then refuses is taken back to its first
// physical line (an unterminated string whose quote a later line seemed to close), so one bad line
// never costs the lines after it.
// `#` after leading whitespace starts a comment line, which always ends at its newline.
import { BACKSLASH, CR, EQUALS, HASH, NL, QUOTE, SPACE, TAB } from './ascii.ts';


/**
 * Calls `line(start, end, number, joined)` for every line of `body[0, n)`; numbers count physical
 * lines from 1. `joined` says the line spans newlines inside a string: the callback then returns
 * false, recording nothing, when the line does not parse, and is called again for the first physical
 * line alone (the scan goes on after it).
 */
export function forEachLine(body: Uint8Array, line: (start: number, end: number, number: number, joined: boolean) => boolean | void): void {
  const n = body.length;
  let nextQuote = body.indexOf(QUOTE);
  if (nextQuote < 0) nextQuote = n;
  let number = 1;
  for (let i = 0; i < n; ) {
    let nl = body.indexOf(NL, i);
    if (nl < 0) nl = n;
    if (nextQuote < i) {
      nextQuote = body.indexOf(QUOTE, i);
      if (nextQuote < 0) nextQuote = n;
    }
    let end = nl;
    let newlines = 0;
    if (nextQuote < nl) {
      const q = quotedEnd(body, i, n);
      if (q >= 0 && q > nl) {
        end = q;
        for (let j = nl; j < q; j++) if (body[j] === NL) newlines++;
      }
    }
    const cr = (x: number) => (x > i && body[x - 1] === CR ? x - 1 : x);
    if (newlines > 0 && line(i, cr(end), number, true) === false) {
      end = nl;
      newlines = 0;
      line(i, cr(end), number, false);
    } else if (newlines === 0) {
      line(i, cr(end), number, false);
    }
    number += newlines + 1;
    i = end + 1;
  }
}

/** The end of a line holding a quote, honouring strings; -1 when a string is still open at the end. */
function quotedEnd(body: Uint8Array, start: number, n: number): number {
  let i = start;
  while (i < n && (body[i] === SPACE || body[i] === TAB)) i++;
  if (body[i] === HASH) return -1; // a comment: the caller ends it at its newline
  let section = 0; // 0 measurement and tags, 1 fields, 2 timestamp
  let sawField = false;
  let quoted = false;
  let afterEquals = false; // the previous byte was an unescaped `=`
  for (; i < n; i++) {
    const b = body[i]!;
    if (quoted) {
      if (b === BACKSLASH) i++;
      else if (b === QUOTE) quoted = false;
      continue;
    }
    if (b === NL) return i;
    const equals = afterEquals;
    afterEquals = false;
    if (b === BACKSLASH) {
      if (body[i + 1] !== NL) i++;
      continue;
    }
    if (b === SPACE) {
      if (section === 0) section = 1;
      else if (section === 1 && sawField) section = 2;
      continue;
    }
    if (section === 1) {
      sawField = true;
      if (b === EQUALS) afterEquals = true;
      else if (b === QUOTE && equals) quoted = true;
    }
  }
  return quoted ? -1 : n;
}
