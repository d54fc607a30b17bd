// Benchmark facilities: F rows in strata.facilities with known ingest tokens (reader roles are names
// only; no login is created).
import type { Db } from '../../src/db/port.ts';
import { tokenHash } from '../../src/facilities/secrets.ts';

/** Registers `count` facilities f0…f<count-1> in region `bench`; returns their tokens in order. */
export async function benchFacilities(db: Db, count: number, prefix: string): Promise<string[]> {
  const tokens = Array.from({ length: count }, (_, i) => `stk_${prefix}_${process.pid}_${i}`);
  for (const [i, token] of tokens.entries()) {
    await db.query(`INSERT INTO strata.facilities (code, region, token_hash, reader_role) VALUES ($1, 'bench', $2, $3)`, [`f${i}`, tokenHash(token), `${prefix}_reader_${process.pid}_${i}`]);
  }
  return tokens;
}
