// The node-postgres port discards a connection whose statement failed because the server does not
// accept writes (SQLSTATE 25006), on every path: a plain query, a transaction, a COPY in and out of
// one. Such a connection points at a read-only server (a primary turned read-only, a standby behind
// a write endpoint that has not moved yet); kept in the pool it would fail every later write.
// A data error, by contrast, leaves the connection in the pool.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDb } from '../src/db/open.ts';
import type { Db, Queryable } from '../src/db/port.ts';
import { cluster, createDatabase, type TestDatabase } from './support/databases.ts';

let t: TestDatabase;
let db: Db;

beforeAll(async () => {
  t = await createDatabase(cluster().adminUrl(), 'strata_ro_pool');
  db = await openDb(t.url, { max: 1 }); // one connection: the next statement shows whether it was kept
  await db.exec('CREATE TABLE ro_t (id int)');
});

afterAll(async () => {
  await db?.close();
  await t?.drop();
});

const pid = async (q: Queryable = db) => (await q.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid;

/** Makes the pooled connection's session read-only (as a reload of default_transaction_read_only does), runs `write`, and reports what happened. */
async function onReadOnlySession(write: () => Promise<unknown>): Promise<{ code: unknown; kept: boolean }> {
  await db.query('SET default_transaction_read_only = on');
  const before = await pid();
  const err = (await write().catch((e: unknown) => e)) as { code?: unknown } | undefined;
  const after = await pid();
  if (after === before) await db.query('SET default_transaction_read_only = off'); // leave the pool usable for the next case
  return { code: err?.code, kept: after === before };
}

describe('node-postgres port, a read-only server (SQLSTATE 25006)', () => {
  it('destroys the connection instead of returning it to the pool, on every path, and the next one writes; a data error keeps it', async () => {
    expect(await onReadOnlySession(() => db.query('INSERT INTO ro_t VALUES (1)'))).toEqual({ code: '25006', kept: false });
    expect(await onReadOnlySession(() => db.exec('INSERT INTO ro_t VALUES (2)'))).toEqual({ code: '25006', kept: false });
    expect(await onReadOnlySession(() => db.transaction((tx) => tx.query('INSERT INTO ro_t VALUES (3)')))).toEqual({ code: '25006', kept: false });
    expect(await onReadOnlySession(() => db.copyIn('COPY ro_t FROM STDIN', [Buffer.from('4\n')]))).toEqual({ code: '25006', kept: false });
    expect(await onReadOnlySession(() => db.transaction((tx) => tx.copyIn('COPY ro_t FROM STDIN', [Buffer.from('5\n')])))).toEqual({ code: '25006', kept: false });
    // The fresh connection accepts writes.
    await db.query('INSERT INTO ro_t VALUES (6)');
    expect((await db.query<{ id: number }>('SELECT id FROM ro_t')).rows).toEqual([{ id: 6 }]);
    // A data error, by contrast, leaves the connection in the pool.
    const before = await pid();
    const err = (await db.query(`INSERT INTO ro_t VALUES ('x')`).catch((e: unknown) => e)) as { code?: unknown };
    expect(err.code).toBe('22P02');
    expect(await pid()).toBe(before);
  });
});
