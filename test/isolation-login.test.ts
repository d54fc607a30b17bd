// Facility isolation from real reader logins on native PostgreSQL (metrics is a plain table there):
// what a session logged in as a facility reader can and cannot do, and the grant/revoke commands.
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { main } from '../src/cli.ts';
import { openDb } from '../src/db/open.ts';
import type { Db } from '../src/db/port.ts';
import { addFacility } from '../src/facilities/registry.ts';
import { cluster, createDatabase, uniqueName, type TestDatabase } from './support/databases.ts';
import { plainSchema } from './support/gateway.ts';

let t: TestDatabase;
let admin: Db;
const tag = uniqueName('x').slice(2);
const A = { code: `la-${tag}`, id: 0, role: '', password: '' };
const B = { code: `lb-${tag}`, id: 0, role: '', password: '' };
const grafana = `grafana_${tag}`;

async function login(role: string, password: string): Promise<pg.Client> {
  const u = new URL(t.url);
  u.username = role;
  u.password = password;
  const c = new pg.Client({ connectionString: u.toString() });
  await c.connect();
  return c;
}

async function strata(args: string[]) {
  const out: string[] = [];
  const err: string[] = [];
  const code = await main(args, { out: (s) => out.push(s), err: (s) => err.push(s), env: { STRATA_ADMIN_DATABASE_URL: t.url, STRATA_LOG_LEVEL: 'error' } });
  return { code, out: out.join('\n'), err: err.join('\n') };
}

beforeAll(async () => {
  t = await createDatabase(cluster().adminUrl(), 'strata_login');
  admin = await openDb(t.url);
  await plainSchema(admin);
  for (const f of [A, B]) {
    const created = await addFacility(admin, { code: f.code, region: 'test-1' });
    Object.assign(f, { id: created.facility.id, role: created.facility.readerRole, password: created.readerPassword });
  }
  await admin.query(`INSERT INTO strata.series (facility_id, measurement, field) VALUES ($1, 'm', 'a'), ($2, 'm', 'b')`, [A.id, B.id]);
  await admin.query(
    `INSERT INTO strata.metrics SELECT now() - make_interval(mins => i), s.facility_id, s.id, CASE WHEN s.facility_id = $1 THEN i ELSE -i END
       FROM generate_series(1, 100) i, strata.series s`,
    [A.id],
  );
  await admin.exec(`CREATE ROLE ${grafana} LOGIN PASSWORD 'grafana-pw'`);
});

afterAll(async () => {
  await admin?.exec(`DROP OWNED BY ${grafana}; DROP ROLE IF EXISTS ${grafana}`).catch(() => {});
  await admin?.close();
  await t?.drop();
});

const sums = async (c: pg.Client) => (await c.query('SELECT count(*)::int AS n, coalesce(sum(value), 0)::int AS s FROM strata.facility_metrics')).rows[0];

describe('a facility reader login', () => {
  it('sees its facility through the view and is denied the table, the grants and every role switch', async () => {
    const c = await login(A.role, A.password);
    try {
      expect(await sums(c)).toEqual({ n: 100, s: 5050 });
      await expect(c.query('SELECT 1 FROM strata.metrics')).rejects.toThrow(/permission denied for table metrics/);
      await expect(c.query('SELECT 1 FROM strata.facility_grants')).rejects.toThrow(/permission denied for table facility_grants/);
      await expect(c.query(`SET ROLE "${B.role}"`)).rejects.toThrow(/permission denied to set role/);
      await expect(c.query(`SET SESSION AUTHORIZATION "${B.role}"`)).rejects.toThrow(/permission denied to set session authorization/);
      await expect(c.query(`SELECT set_config('role', '${B.role}', false)`)).rejects.toThrow(/permission denied to set role/);
      await expect(c.query('SET ROLE strata_maintainer')).rejects.toThrow(/permission denied to set role/);
      await c.query(`SELECT set_config('strata.facility_id', '${B.id}', false)`);
      expect(await sums(c)).toEqual({ n: 100, s: 5050 });
      // Its group role holds no grants of its own: switching to it shows less, never more.
      await c.query('SET ROLE strata_reader');
      expect(await sums(c)).toEqual({ n: 0, s: 0 });
      await c.query('RESET ROLE');
      expect((await c.query('SELECT code FROM strata.facilities')).rows).toEqual([{ code: A.code }]);
      expect((await c.query('SELECT field FROM strata.series')).rows).toEqual([{ field: 'a' }]);
    } finally {
      await c.end();
    }
  });
});

describe('strata facility grant and revoke', () => {
  it('lets a login role (e.g. Grafana) read the facilities granted to it, and takes them back', async () => {
    const c = await login(grafana, 'grafana-pw');
    try {
      await expect(c.query('SELECT 1 FROM strata.facility_metrics')).rejects.toThrow(/permission denied for (schema strata|view facility_metrics)/);
      expect(await strata(['facility', 'grant', grafana, A.code])).toEqual({ code: 0, out: `role ${grafana} may now read facility ${A.code} (through strata.facility_metrics)`, err: '' });
      expect(await sums(c)).toEqual({ n: 100, s: 5050 });
      expect((await strata(['facility', 'grant', grafana, B.code])).code).toBe(0);
      expect(await sums(c)).toEqual({ n: 200, s: 0 });
      expect((await strata(['facility', 'grant', grafana, B.code])).out).toBe(`role ${grafana} could already read facility ${B.code}`);
      expect((await strata(['facility', 'revoke', grafana, A.code])).out).toBe(`role ${grafana} may no longer read facility ${A.code}`);
      expect(await sums(c)).toEqual({ n: 100, s: -5050 });
      expect((await strata(['facility', 'revoke', grafana, A.code])).out).toBe(`role ${grafana} had no grant on facility ${A.code}; nothing to revoke`);
      expect((await strata(['facility', 'revoke', grafana, B.code])).code).toBe(0);
      expect(await sums(c)).toEqual({ n: 0, s: 0 });
    } finally {
      await c.end();
    }
  });

  it('names a missing role or facility, and bad usage', async () => {
    expect(await strata(['facility', 'grant', 'no_such_role', A.code])).toEqual({
      code: 65,
      out: '',
      err: `strata: cannot grant facility "${A.code}" to "no_such_role": database role "no_such_role" does not exist (create it first, e.g. CREATE ROLE "no_such_role" LOGIN PASSWORD '…')`,
    });
    expect(await strata(['facility', 'revoke', grafana, 'nope'])).toMatchObject({ code: 65, err: `strata: cannot revoke facility "nope" from "${grafana}": no facility "nope" (see strata facility list)` });
    expect(await strata(['facility', 'grant', grafana])).toMatchObject({ code: 64, err: 'strata: usage: strata facility grant <role> <facility>' });
  });
});
