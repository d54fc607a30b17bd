// A large line-protocol body in slices of whole lines, so it is encoded a slice at a time, and the
// slices' results joined back with line numbers counted from the start of the body.
import { NL, QUOTE } from './ascii.ts';
import type { Encoded } from './line-encoder.ts';
import type { LineError } from './lineprotocol.ts';

export interface LineSlice {
  start: number;
  end: number;
  /** Physical lines before the slice: its line k is line lineOffset + k of the body. */
  lineOffset: number;
}

/**
 * Slices of about `bytes` each, cut after a newline. A body with a quote anywhere is one slice:
 * a newline inside a string field belongs to its line (line-scan.ts), so only a scan of the whole
 * body could tell where lines end there.
 */
export function sliceLines(body: Uint8Array, bytes: number): LineSlice[] {
  if (body.length <= bytes || body.indexOf(QUOTE) >= 0) return [{ start: 0, end: body.length, lineOffset: 0 }];
  const slices: LineSlice[] = [];
  let lines = 0;
  for (let start = 0; start < body.length; ) {
    let end = body.length;
    if (start + bytes < body.length) {
      const nl = body.lastIndexOf(NL, start + bytes - 1);
      end = nl >= start ? nl + 1 : body.indexOf(NL, start + bytes) + 1 || body.length;
    }
    slices.push({ start, end, lineOffset: lines });
    for (let i = body.indexOf(NL, start); i >= 0 && i < end; i = body.indexOf(NL, i + 1)) lines++;
    start = end;
  }
  return slices;
}

const shift = (errors: LineError[], by: number) => errors.map((e) => ({ ...e, line: e.line + by }));

/** A slice's result with its line numbers counted from the start of the body. */
export function renumber(e: Encoded, by: number): Encoded {
  return { tuples: e.tuples, rows: e.rows, points: e.points.map((p) => ({ ...p, line: p.line + by })), errors: shift(e.errors, by), fieldErrors: shift(e.fieldErrors, by) };
}

/** The slices' results as one, in line order. */
export function mergeEncoded(parts: readonly Encoded[]): Encoded {
  return {
    tuples: Buffer.concat(parts.map((p) => p.tuples)),
    rows: parts.reduce((n, p) => n + p.rows, 0),
    points: parts.flatMap((p) => p.points),
    errors: parts.flatMap((p) => p.errors),
    fieldErrors: parts.flatMap((p) => p.fieldErrors),
  };
}
