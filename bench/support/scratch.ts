// A scratch database on the benchmark's TimescaleDB server: created from a superuser URL, dropped
// (with any roles the benchmark created) when the benchmark ends.
import pg from 'pg';
import { openDb } from '../../src/db/open.ts';
import type { Db } from '../../src/db/port.ts';

export interface Scratch {
  name: string;
  /** Direct URL of the scratch database. */
  url: string;
  db: Db;
  versions(): Promise<{ postgres: string; timescaledb: string }>;
  drop(roles?: readonly string[]): Promise<void>;
}

export async function scratchDatabase(serverUrl: string, prefix: string, max = 2): Promise<Scratch> {
  const name = `${prefix}_${process.pid}`;
  const admin = new pg.Client({ connectionString: serverUrl });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${name}`);
  const direct = new URL(serverUrl);
  direct.pathname = `/${name}`;
  const db = await openDb(direct.toString(), { max });
  return {
    name,
    url: direct.toString(),
    db,
    async versions() {
      const r = await db.query<{ v: string; t: string }>(`SELECT current_setting('server_version') AS v, (SELECT extversion FROM pg_extension WHERE extname = 'timescaledb') AS t`);
      return { postgres: r.rows[0]!.v, timescaledb: r.rows[0]!.t };
    },
    async drop(roles = []) {
      await db.close().catch(() => {});
      await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      for (const role of roles) await admin.query(`DROP ROLE IF EXISTS "${role}"`);
      await admin.end();
    },
  };
}
