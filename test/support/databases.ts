// Per-test databases: each test (file) gets its own, on the native cluster, on PGlite-TimescaleDB,
// or on the TimescaleDB server named by STRATA_TEST_TIMESCALE_URL.
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chownSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { inject } from 'vitest';
import { openDb } from '../../src/db/open.ts';
import type { PgliteDb } from '../../src/db/pglite.ts';
import type { Db } from '../../src/db/port.ts';
import { Cluster } from './cluster.ts';

export function cluster(): Cluster {
  return Cluster.attach(inject('cluster'));
}

export function uniqueName(prefix: string): string {
  return `${prefix}_${randomBytes(4).toString('hex')}`;
}

async function adminQuery(url: string, sql: string, params: unknown[] = []): Promise<pg.QueryResult> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    return await c.query(sql, params);
  } finally {
    await c.end();
  }
}

function withDatabase(url: string, database: string): string {
  const u = new URL(url);
  u.pathname = `/${database}`;
  return u.toString();
}

export interface TestDatabase {
  name: string;
  /** Direct connection URL. */
  url: string;
  drop(): Promise<void>;
}

/** A fresh database on a server reached through `serverUrl` (as a superuser). */
export async function createDatabase(serverUrl: string, prefix = 'strata_test'): Promise<TestDatabase> {
  const name = uniqueName(prefix);
  await adminQuery(serverUrl, `CREATE DATABASE ${name}`);
  const url = withDatabase(serverUrl, name);
  return {
    name,
    url,
    async drop() {
      // Reader roles are cluster-wide: remove those this database created.
      const roles = await adminQuery(url, `SELECT reader_role FROM strata.facilities`).then((r) => r.rows.map((x) => x.reader_role as string), () => []);
      await adminQuery(serverUrl, `DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      for (const role of roles) await adminQuery(serverUrl, `DROP ROLE IF EXISTS "${role}"`);
    },
  };
}

export interface TimescaleTarget {
  name: string;
  /** A fresh, empty database with TimescaleDB available; close() drops it. */
  open(opts?: { max?: number }): Promise<{ db: Db; url: string; close(): Promise<void> }>;
}

/** PGlite-TimescaleDB always; a real TimescaleDB too when STRATA_TEST_TIMESCALE_URL is set. */
export function timescaleTargets(): TimescaleTarget[] {
  const targets: TimescaleTarget[] = [
    {
      name: 'pglite-timescaledb',
      async open() {
        const db = await openDb('pglite:memory');
        return { db, url: 'pglite:memory', close: () => db.close() };
      },
    },
  ];
  const server = process.env.STRATA_TEST_TIMESCALE_URL;
  if (server) {
    targets.push({
      name: 'timescaledb-server',
      async open(opts = {}) {
        const t = await createDatabase(server, 'strata_tsdb');
        const db = await openDb(t.url, opts);
        return {
          db,
          url: t.url,
          async close() {
            await db.close();
            await t.drop();
          },
        };
      },
    });
  }
  return targets;
}

/**
 * A tablespace named `name` (suffixed on a server, where tablespaces are cluster-wide): inside
 * PGlite's data directory, or a fresh local directory of a loopback server (owned by postgres).
 */
export async function tablespace(db: Db, url: string, name: string): Promise<{ name: string; drop(): Promise<void> }> {
  if (db.kind === 'pglite') {
    await (db as PgliteDb).ensureTablespace(name);
    return { name, drop: async () => {} };
  }
  const dir = mkdtempSync(join(tmpdir(), 'strata-ts-'));
  if (process.getuid?.() === 0) chownSync(dir, Number(execFileSync('id', ['-u', 'postgres']).toString()), Number(execFileSync('id', ['-g', 'postgres']).toString()));
  const unique = uniqueName(name);
  await db.exec(`CREATE TABLESPACE ${unique} LOCATION '${dir}'`);
  return { name: unique, drop: () => adminQuery(withDatabase(url, 'postgres'), `DROP TABLESPACE IF EXISTS ${unique}`).then(() => {}) };
}
