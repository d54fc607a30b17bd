// A missed write deadline cancels its work on the server: through PgBouncer, the aborted
// transaction's statement stops (pg_stat_activity), its connection is not pooled again, the writer
// slot is held until then, and the batch is written exactly once in the end.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDb } from '../../src/db/open.ts';
import type { Db } from '../../src/db/port.ts';
import type { Gateway } from '../../src/ingest/gateway.ts';
import { cluster, createDatabase, type TestDatabase } from '../support/databases.ts';
import { count, facility, gateway, plainSchema, post } from '../support/gateway.ts';
import { until } from '../support/wait.ts';

let t: TestDatabase;
let admin: Db;
let db: Db;
let fac: { id: number; token: string };
const gateways: Gateway[] = [];

beforeAll(async () => {
  t = await createDatabase(cluster().adminUrl(), 'strata_deadline');
  admin = await openDb(t.url);
  await plainSchema(admin);
  fac = await facility(admin, 'oven');
  db = await openDb(cluster().bouncerUrl(t.name), { max: 4 });
  // A row with value -42 takes 30 s to insert: far beyond any deadline below.
  await admin.exec(`CREATE FUNCTION strata.slow_row() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN IF NEW.value = -42 THEN PERFORM pg_sleep(30); END IF; RETURN NEW; END $$`);
  await admin.exec('CREATE TRIGGER slow_row BEFORE INSERT ON strata.metrics FOR EACH ROW EXECUTE FUNCTION strata.slow_row()');
});

afterAll(async () => {
  for (const g of gateways) await g.stop();
  await db?.close();
  await admin?.close();
  await t?.drop();
});

/** Statements of the test database still running on the server (other than this query). */
async function busy(pattern: string): Promise<number> {
  const r = await admin.query<{ n: number }>(
    `SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = $1 AND state = 'active' AND pid <> pg_backend_pid() AND query ILIKE $2`,
    [t.name, pattern],
  );
  return r.rows[0]!.n;
}

describe('a missed deadline', () => {
  it('cancels the statement on the server before the aborted transaction settles', async () => {
    const abort = new AbortController();
    const started = performance.now();
    const tx = db.transaction(async (q) => q.query('SELECT pg_sleep(30)'), { signal: abort.signal });
    await until('the sleep to run on the server', async () => (await busy('SELECT pg_sleep(30)%')) === 1);
    abort.abort(new Error('deadline passed'));
    await expect(tx).rejects.toThrow(/canceling statement due to user request|deadline passed/);
    expect(performance.now() - started).toBeLessThan(20_000);
    expect(await busy('SELECT pg_sleep(30)%')).toBe(0);
    // The pool still lends working connections.
    expect((await db.query<{ one: number }>('SELECT 1 AS one')).rows[0]!.one).toBe(1);
  });

  it('refuses a transaction whose signal already aborted, without borrowing a connection', async () => {
    const abort = new AbortController();
    abort.abort(new Error('too late'));
    let ran = false;
    await expect(db.transaction(async () => void (ran = true), { signal: abort.signal })).rejects.toThrow('too late');
    expect(ran).toBe(false);
  });

  it('leaves no COPY running once the attempt settled, and the batch is committed once when the database is fast again', async () => {
    const g = await gateway(db, { attemptTimeoutMs: 300, maxAttempts: 2, batchAgeMs: 5, writers: 2, replayIntervalMs: 300 });
    gateways.push(g);
    const auth = { Authorization: `Token ${fac.token}` };
    // Both attempts miss their deadline; the batch is spooled (acknowledged) and the database taken for down.
    const r = await post(g.url, '/api/v2/write?precision=s', 'kiln,k=slow v=-42 1700000000', auth);
    expect(r.status).toBe(204);
    // Every cancelled attempt settled before the answer: nothing of it still runs on the server.
    expect(await busy('COPY%')).toBe(0);
    expect(g.spool.empty).toBe(false);
    // While the trigger stays, every replay attempt is cancelled too; once it is gone the replay commits.
    await admin.exec('DROP TRIGGER slow_row ON strata.metrics');
    await until('the spooled batch to be replayed', async () => g.spool.empty && (await count(admin, 'value = -42')) === 1, 120_000);
    expect(await busy('COPY%')).toBe(0);
    expect(await count(admin, 'value = -42')).toBe(1);
    expect((await admin.query<{ n: number }>('SELECT count(*)::int AS n FROM strata.ingest_ledger WHERE facility_id = $1', [fac.id])).rows[0]!.n).toBe(1);
  }, 180_000);
});
