// Strata's roles belong to the cluster while the migration lock belongs to one database, so two
// databases migrating at once on one cluster both find a role missing and both create it. The
// loser's CREATE ROLE fails on pg_authid's unique index; ensureRoles takes that role as created.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDb } from '../src/db/open.ts';
import type { Db } from '../src/db/port.ts';
import { ensureRoles } from '../src/db/roles.ts';
import { cluster, createDatabase, uniqueName, type TestDatabase } from './support/databases.ts';

const dbs: TestDatabase[] = [];
const pools: Db[] = [];
const made: string[] = [];

beforeAll(async () => {
  for (const prefix of ['strata_roles_a', 'strata_roles_b']) {
    const t = await createDatabase(cluster().adminUrl(), prefix);
    dbs.push(t);
    pools.push(await openDb(t.url, { max: 4 }));
  }
});

afterAll(async () => {
  for (const role of made) await pools[0]?.exec(`DROP ROLE IF EXISTS ${role}`);
  for (const p of pools) await p.close();
  for (const t of dbs) await t.drop();
});

describe('ensureRoles', () => {
  it('creates missing roles once when sessions in two databases race for them, and none fails', async () => {
    for (let round = 0; round < 20; round++) {
      const roles = [uniqueName('strata_race_r'), uniqueName('strata_race_r')];
      made.push(...roles);
      // Four sessions per database, all asking for the same two new roles at once.
      const runs = pools.flatMap((p) => [0, 1, 2, 3].map(() => ensureRoles(p, roles)));
      const results = await Promise.allSettled(runs);
      expect(results.filter((r) => r.status === 'rejected').map((r) => String((r as PromiseRejectedResult).reason))).toEqual([]);
      const have = await pools[1]!.query<{ rolname: string; rolcanlogin: boolean }>('SELECT rolname, rolcanlogin FROM pg_roles WHERE rolname = ANY($1) ORDER BY rolname', [roles]);
      expect(have.rows).toEqual([...roles].sort().map((rolname) => ({ rolname, rolcanlogin: false })));
    }
  });

  it('names the role and the reason when it cannot create one', async () => {
    const role = uniqueName('strata_race_denied');
    const t = dbs[0]!;
    const pool = pools[0]!;
    await pool.exec(`CREATE ROLE ${role}_login LOGIN PASSWORD 'x'`);
    made.push(`${role}_login`);
    const url = new URL(t.url);
    url.username = `${role}_login`;
    url.password = 'x';
    const weak = await openDb(url.toString(), { max: 1 });
    try {
      await expect(ensureRoles(weak, [role])).rejects.toThrow(new RegExp(`cannot create database role ${role}: permission denied.*\\(SQLSTATE 42501\\)`));
    } finally {
      await weak.close();
    }
    await expect(ensureRoles(pool, ['Bad-Name'])).rejects.toThrow('invalid role name "Bad-Name"');
  });
});
