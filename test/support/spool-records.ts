// Spool test helpers: realistic batches (binary COPY rows) and sealed segments holding them.
import { randomUUID } from 'node:crypto';
import { readdir } from 'node:fs/promises';
import { encodeTuples } from '../../src/ingest/copy-encode.ts';
import { Spool, spoolBytes } from '../../src/ingest/spool.ts';
import type { SpoolRecord } from '../../src/ingest/types.ts';
import { silentLogger } from '../../src/log.ts';

/** `n` batches of `rows` binary COPY rows each; batch i is series i + 1. */
export function batches(n: number, rows: number, facilityId: number): SpoolRecord[] {
  return Array.from({ length: n }, (_, i) => ({
    batchId: randomUUID(),
    facilityId,
    rowCount: rows,
    rows: encodeTuples(Array.from({ length: rows }, (_, j) => ({ timeUs: 1_700_000_000_000_000n + BigInt(j), facilityId, seriesId: i + 1, value: j }))),
    spooledAt: 1_700_000_000_000 + i,
  }));
}
/** A sealed segment holding `records`, one append each (the spool is closed again). */
export async function sealedSegment(dir: string, records: readonly SpoolRecord[]): Promise<string> {
  const s = await Spool.open({ dir, maxBytes: 1 << 30, logger: silentLogger });
  for (const r of records) await s.append([r]);
  await s.close();
  const names = (await readdir(dir)).filter((n) => n.startsWith('seg-'));
  if (names.length !== 1) throw new Error(`expected one segment in ${dir}, found ${names.join(', ')}`);
  return names[0]!;
}
export const offsetOf = (records: readonly SpoolRecord[], i: number) => spoolBytes(records.slice(0, i));
