// Facilities share the gateway: a facility over its share of the queue is refused while a quiet
// facility within its share is still accepted; a request larger than a batch is written as
// batch-sized pieces by several writers, exactly once, and a piece the database refuses costs only
// its own rows.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDb } from '../../src/db/open.ts';
import type { Db } from '../../src/db/port.ts';
import { TUPLE_BYTES } from '../../src/ingest/copy-encode.ts';
import type { Gateway } from '../../src/ingest/gateway.ts';
import { cluster, createDatabase, type TestDatabase } from '../support/databases.ts';
import { count, facility, gateway, lockMetrics, plainSchema, post } from '../support/gateway.ts';
import { until } from '../support/wait.ts';

let t: TestDatabase;
let admin: Db;
let db: Db;
let noisy: { id: number; token: string };
let quiet: { id: number; token: string };
const gateways: Gateway[] = [];

beforeAll(async () => {
  t = await createDatabase(cluster().adminUrl(), 'strata_fair');
  admin = await openDb(t.url);
  await plainSchema(admin);
  noisy = await facility(admin, 'hog');
  quiet = await facility(admin, 'meek');
  db = await openDb(cluster().bouncerUrl(t.name), { max: 6 });
});

afterAll(async () => {
  for (const g of gateways) await g.stop();
  await db?.close();
  await admin?.close();
  await t?.drop();
});

async function start(o: Parameters<typeof gateway>[1]) {
  const g = await gateway(db, o);
  gateways.push(g);
  return g;
}

const lines = (m: string, n: number, from = 0, value = (i: number) => i) =>
  Array.from({ length: n }, (_, i) => `${m},k=k${i % 10} v=${value(from + i)} ${1_700_000_000 + from + i}`).join('\n');

describe('sharing the gateway between facilities', () => {
  it('refuses a facility over its share of the queue while a quiet facility within its share is accepted', async () => {
    const g = await start({ maxQueueBytes: 1 << 20, batchRows: 500, batchAgeMs: 5, attemptTimeoutMs: 60_000 });
    const lock = await lockMetrics(admin);
    const noisyAuth = { Authorization: `Token ${noisy.token}` };
    const quietAuth = { Authorization: `Token ${quiet.token}` };
    const piece = 2_000 * TUPLE_BYTES; // bytes a 2,000-row request queues
    const flood: Promise<Awaited<ReturnType<typeof post>>>[] = [];
    let calm!: ReturnType<typeof post>;
    try {
      // One request at a time while nothing can be written, until the noisy facility is refused.
      for (let i = 0; i < 20; i++) {
        const queued = g.ingestor.queuedBytes;
        const answer = post(g.url, '/api/v2/write?precision=s', lines('flood', 2_000, i * 2_000), noisyAuth);
        flood.push(answer);
        let refused = false;
        void answer.then((a) => (refused = a.status === 429));
        await until('the noisy request to be queued or refused', () => refused || g.ingestor.queuedBytes === queued + piece);
        if (refused) break;
      }
      const before = g.ingestor.queuedBytes;
      expect(before).toBeGreaterThan(0.5 * (1 << 20));
      calm = post(g.url, '/api/v2/write?precision=s', lines('calm', 2_000), quietAuth);
      await until('the quiet request to be queued', () => g.ingestor.queuedBytes === before + piece);
    } finally {
      await lock.release();
    }
    const answers = await Promise.all(flood);
    const refused = answers.filter((a) => a.status === 429);
    expect(refused).toHaveLength(1);
    expect(String(refused[0]!.body.message)).toMatch(/^this facility holds \d+ bytes of the gateway's queue, over its share/);
    expect(refused[0]!.headers.get('retry-after')).toBe('1');
    expect((await calm).status).toBe(204);
    const accepted = answers.filter((a) => a.status === 204).length;
    expect(await count(admin, `facility_id = ${noisy.id}`)).toBe(accepted * 2_000);
    expect(await count(admin, `facility_id = ${quiet.id}`)).toBe(2_000);
  }, 120_000);

  it('writes a request larger than a batch as batch-sized pieces, each once', async () => {
    const g = await start({ batchRows: 1_000, batchAgeMs: 5, writers: 4 });
    const before = (await admin.query<{ n: number }>('SELECT count(*)::int AS n FROM strata.ingest_ledger WHERE facility_id = $1', [quiet.id])).rows[0]!.n;
    const r = await post(g.url, '/api/v2/write?precision=s', lines('big', 10_000, 100_000), { Authorization: `Token ${quiet.token}` });
    expect(r.status).toBe(204);
    expect(await count(admin, `series_id IN (SELECT id FROM strata.series WHERE measurement = 'big')`)).toBe(10_000);
    const after = (await admin.query<{ n: number }>('SELECT count(*)::int AS n, max(row_count)::int AS most FROM strata.ingest_ledger WHERE facility_id = $1', [quiet.id])).rows[0]!;
    expect(after.n - before).toBeGreaterThanOrEqual(10);
    expect((after as unknown as { most: number }).most).toBeLessThanOrEqual(1_000);
  });

  it('answers a piece the database refuses with 400 naming how many rows of the request were written', async () => {
    await admin.exec('ALTER TABLE strata.metrics ADD CONSTRAINT sane CHECK (value < 1e300)');
    try {
      const g = await start({ batchRows: 1_000, batchAgeMs: 5, writers: 4 });
      // Row 2,500 (in the third piece) is refused by the database, not by the parser.
      const r = await post(g.url, '/api/v2/write?precision=s', lines('part', 5_000, 200_000, (i) => (i === 202_500 ? 1e301 : i)), { Authorization: `Token ${quiet.token}` });
      expect(r.status).toBe(400);
      expect(String(r.body.message)).toMatch(/^the database rejected the rows: .*violates check constraint "sane".* \(4000 of this request's 5000 rows were written\)$/);
      expect(r.body.written).toBe(4_000);
      expect(await count(admin, `series_id IN (SELECT id FROM strata.series WHERE measurement = 'part')`)).toBe(4_000);
    } finally {
      await admin.exec('ALTER TABLE strata.metrics DROP CONSTRAINT sane');
    }
  });
});
