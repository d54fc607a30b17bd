// strata facility add / list: token shown once and stored as a hash, reader login role, errors.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import pg from 'pg';
import { migrate } from '../src/db/migrate.ts';
import { openDb } from '../src/db/open.ts';
import type { Db } from '../src/db/port.ts';
import { StrataError } from '../src/errors.ts';
import { addFacility, listFacilities } from '../src/facilities/registry.ts';
import { scramVerifier, tokenHash } from '../src/facilities/secrets.ts';
import { cluster, createDatabase, timescaleTargets, uniqueName } from './support/databases.ts';

describe.each(timescaleTargets())('facilities on $name', (target) => {
  let handle: Awaited<ReturnType<typeof target.open>>;
  let db: Db;
  beforeEach(async () => {
    handle = await target.open();
    db = handle.db;
    await migrate(db, { chunkInterval: '1 hour' });
  });
  afterEach(async () => handle.close());

  it('registers a facility with a hashed token and a reader login role granted only that facility', async () => {
    const code = uniqueName('plant').replace(/_/g, '-');
    const created = await addFacility(db, { code, region: 'eu-west-1', name: 'Press shop' });
    expect(created.token).toMatch(/^stk_[A-Za-z0-9_-]{43}$/);
    expect(created.facility).toMatchObject({ code, region: 'eu-west-1', name: 'Press shop', readerRole: `strata_reader_${code.replace(/-/g, '_')}`, seriesCount: 0 });

    const row = await db.query<{ token_hash: Uint8Array }>('SELECT token_hash FROM strata.facilities WHERE code = $1', [code]);
    expect(Buffer.from(row.rows[0]!.token_hash).equals(tokenHash(created.token))).toBe(true);
    const leaked = await db.query(`SELECT 1 FROM strata.facilities WHERE position($1 in row_to_json(facilities)::text) > 0`, [created.token.slice(4)]);
    expect(leaked.rows).toEqual([]);

    const role = await db.query<{ rolcanlogin: boolean; member: boolean; pw: string }>(
      `SELECT rolcanlogin, pg_has_role(rolname, 'strata_reader', 'MEMBER') AS member, rolpassword AS pw FROM pg_authid WHERE rolname = $1`,
      [created.facility.readerRole],
    );
    expect(role.rows[0]!.rolcanlogin).toBe(true);
    expect(role.rows[0]!.member).toBe(true);
    expect(role.rows[0]!.pw).toMatch(/^SCRAM-SHA-256\$4096:/);
    expect(role.rows[0]!.pw).not.toContain(created.readerPassword);

    const grants = await db.query('SELECT role_name, facility_id FROM strata.facility_grants');
    expect(grants.rows).toEqual([{ role_name: created.facility.readerRole, facility_id: created.facility.id }]);
  });

  it('lists facilities without tokens or hashes', async () => {
    const a = await addFacility(db, { code: uniqueName('a'), region: 'eu-west-1' });
    const b = await addFacility(db, { code: uniqueName('b'), region: 'us-east-1', name: 'B' });
    const list = await listFacilities(db);
    expect(list.map((f) => f.code)).toEqual([a.facility.code, b.facility.code]);
    const text = JSON.stringify(list);
    expect(text).not.toContain(a.token);
    expect(text).not.toContain('token');
    expect(text).not.toContain(a.readerPassword);
  });

  it('refuses a duplicate code and leaves the first facility intact', async () => {
    const code = uniqueName('dup');
    const first = await addFacility(db, { code, region: 'eu-west-1' });
    const err = await addFacility(db, { code, region: 'us-east-1' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StrataError);
    expect((err as Error).message).toBe(`facility "${code}" already exists (id ${first.facility.id})`);
    const list = await listFacilities(db);
    expect(list).toHaveLength(1);
    expect(list[0]!.region).toBe('eu-west-1');
  });

  it('refuses a code whose reader role already exists, creating nothing', async () => {
    const code = uniqueName('taken');
    await db.exec(`CREATE ROLE strata_reader_${code}`);
    try {
      const err = await addFacility(db, { code, region: 'eu-west-1' }).catch((e: unknown) => e);
      expect((err as Error).message).toContain(`database role "strata_reader_${code}" already exists`);
      expect(await listFacilities(db)).toEqual([]);
    } finally {
      await db.exec(`DROP ROLE strata_reader_${code}`);
    }
  });

  it('refuses a code that maps to another facility\'s reader role', async () => {
    const base = uniqueName('line');
    await addFacility(db, { code: `${base}-1`, region: 'eu-west-1' });
    const err = await addFacility(db, { code: `${base}_1`, region: 'eu-west-1' }).catch((e: unknown) => e);
    expect((err as Error).message).toBe(`facility code "${base}_1" maps to reader role "strata_reader_${base}_1", which facility "${base}-1" already has; choose another code`);
    expect(await listFacilities(db)).toHaveLength(1);
  });

  it('names each invalid field', async () => {
    const err = await addFacility(db, { code: 'Bad Code!', region: 'EU West', name: '' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StrataError);
    const msg = (err as Error).message;
    expect(msg).toMatch(/^cannot add facility: /);
    expect(msg).toContain('code "Bad Code!": must be 1–48 lowercase letters');
    expect(msg).toContain('region "EU West": must be lowercase letters, digits and hyphens');
    expect(msg).toContain('name "": must not be empty');
    expect(await listFacilities(db)).toEqual([]);
  });
});

describe('facilities on an unmigrated database', () => {
  it('says to run strata migrate first', async () => {
    const db = await openDb('pglite:memory');
    try {
      await expect(listFacilities(db)).rejects.toThrow('the database has no Strata schema yet: run strata migrate first');
      await expect(addFacility(db, { code: 'x1', region: 'eu-west-1' })).rejects.toThrow('run strata migrate first');
    } finally {
      await db.close();
    }
  });
});

describe('reader password verifier on native PostgreSQL', () => {
  it('lets the reader log in with the password shown, over SCRAM', async () => {
    const t = await createDatabase(cluster().adminUrl(), 'strata_scram');
    const admin = await openDb(t.url);
    const role = uniqueName('scram_reader');
    try {
      await admin.exec(`CREATE ROLE ${role} LOGIN PASSWORD '${scramVerifier('s3cret-Password')}'`);
      const ok = new pg.Client({ connectionString: t.url.replace(/\/\/[^@]+@/, `//${role}:s3cret-Password@`) });
      await ok.connect();
      expect((await ok.query('SELECT current_user AS u')).rows[0].u).toBe(role);
      await ok.end();
      const bad = new pg.Client({ connectionString: t.url.replace(/\/\/[^@]+@/, `//${role}:wrong@`) });
      await expect(bad.connect()).rejects.toThrow(/password authentication failed/);
    } finally {
      await admin.exec(`DROP ROLE IF EXISTS ${role}`);
      await admin.close();
      await t.drop();
    }
  });
});
