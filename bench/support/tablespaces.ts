// Warm and cold tablespaces for a benchmark on a loopback TimescaleDB server: fresh local directories
// owned by postgres; drop() removes them (after the scratch database that used them is dropped).
import { execFileSync } from 'node:child_process';
import { chownSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import type { Db } from '../../src/db/port.ts';

export async function benchTablespaces(db: Db, serverUrl: string, tag: string): Promise<{ warm: string; cold: string; drop(): Promise<string[]> }> {
  const names: string[] = [];
  for (const tier of ['warm', 'cold']) {
    const dir = mkdtempSync(join(tmpdir(), `strata-${tier}-`));
    if (process.getuid?.() === 0) chownSync(dir, Number(execFileSync('id', ['-u', 'postgres']).toString()), Number(execFileSync('id', ['-g', 'postgres']).toString()));
    names.push(`${tag}_${tier}_${process.pid}`);
    await db.exec(`CREATE TABLESPACE ${names.at(-1)} LOCATION '${dir}'`);
  }
  return {
    warm: names[0]!,
    cold: names[1]!,
    /** Drops both; returns the problems (a tablespace still in use), so the caller can report them. */
    async drop() {
      const admin = new pg.Client({ connectionString: serverUrl });
      await admin.connect();
      const problems: string[] = [];
      try {
        for (const sp of names) await admin.query(`DROP TABLESPACE IF EXISTS ${sp}`).catch((e: unknown) => problems.push(`cannot drop tablespace ${sp}: ${String(e)}`));
      } finally {
        await admin.end();
      }
      return problems;
    },
  };
}
