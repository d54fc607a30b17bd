// The writer's guarantees through PgBouncer: a data error rejects only the offending request, a
// repeated batch id is written once, the queue bound answers 429, and old ledger rows are pruned.
import { randomUUID } from 'node:crypto';
import { readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDb } from '../../src/db/open.ts';
import type { Db } from '../../src/db/port.ts';
import { encodeTuples } from '../../src/ingest/copy-encode.ts';
import type { Gateway } from '../../src/ingest/gateway.ts';
import { cluster, createDatabase, type TestDatabase } from '../support/databases.ts';
import { count, facility, gateway, lockMetrics, plainSchema, post, tempDir } from '../support/gateway.ts';

let t: TestDatabase;
let admin: Db;
let db: Db;
let fac: { id: number; token: string };
const gateways: Gateway[] = [];

beforeAll(async () => {
  t = await createDatabase(cluster().adminUrl(), 'strata_writer');
  admin = await openDb(t.url);
  await plainSchema(admin);
  await admin.exec('ALTER TABLE strata.metrics ADD CONSTRAINT value_sane CHECK (value < 1e300)');
  fac = await facility(admin, 'mill');
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

const metric = async (g: Gateway, name: string) => {
  const m = (await g.metrics.registry.getSingleMetric(name)?.get())?.values ?? [];
  return m.reduce((n, v) => n + v.value, 0);
};

describe('COPY writer', () => {
  it('rejects only the request whose rows the database refuses, even when batched with others', async () => {
    const g = await start({ batchAgeMs: 300, batchRows: 100_000 });
    const auth = { Authorization: `Token ${fac.token}` };
    const [good1, bad, good2] = await Promise.all([
      post(g.url, '/api/v2/write?precision=s', 'iso,k=a v=1 1700000000\niso,k=a v=2 1700000001\n', auth),
      post(g.url, '/api/v2/write?precision=s', 'iso,k=b v=1e301 1700000000\niso,k=b v=5 1700000001\n', auth),
      post(g.url, '/api/v2/write?precision=s', 'iso,k=c v=3 1700000000\n', auth),
    ]);
    expect(good1.status).toBe(204);
    expect(good2.status).toBe(204);
    expect(bad.status).toBe(400);
    expect(bad.body.message).toMatch(/^the database rejected the rows: new row for relation "metrics" violates check constraint "value_sane"/);
    const r = await admin.query<{ k: string; n: number }>(
      `SELECT s.tags->>'k' AS k, count(*)::int AS n FROM strata.metrics m JOIN strata.series s ON s.id = m.series_id WHERE s.measurement = 'iso' GROUP BY 1 ORDER BY 1`,
    );
    expect(r.rows).toEqual([{ k: 'a', n: 2 }, { k: 'c', n: 1 }]);
    expect(await metric(g, 'strata_ingest_batches_total')).toBeGreaterThanOrEqual(3);
  });

  it('writes a batch id once: a second delivery is found in the ledger and counted as a duplicate', async () => {
    const g = await start({});
    const series = await admin.query<{ id: number }>(`INSERT INTO strata.series (facility_id, measurement, field) VALUES ($1, 'dup', 'v') RETURNING id`, [fac.id]);
    const rows = encodeTuples([0, 1, 2].map((i) => ({ timeUs: 1_700_000_000_000_000n + BigInt(i), facilityId: fac.id, seriesId: series.rows[0]!.id, value: i })));
    const record = { batchId: randomUUID(), facilityId: fac.id, rowCount: 3, rows, spooledAt: Date.now() };
    await g.writer.replay(record);
    await g.writer.replay(record);
    expect(await count(admin, `series_id = ${series.rows[0]!.id}`)).toBe(3);
    expect(await metric(g, 'strata_ingest_duplicates_avoided_total')).toBe(1);
    const ledger = await admin.query('SELECT row_count FROM strata.ingest_ledger WHERE batch_id = $1', [record.batchId]);
    expect(ledger.rows).toEqual([{ row_count: 3 }]);
  });

  it('answers 429 with Retry-After when the queue is full, and still commits what it accepted', async () => {
    const g = await start({ maxQueueBytes: 64 * 1024, batchAgeMs: 5 });
    const auth = { Authorization: `Token ${fac.token}` };
    const body = (tag: string) => Array.from({ length: 1_000 }, (_, i) => `bp,r=${tag} v=${i} ${1_700_000_000 + i}`).join('\n');
    const lock = await lockMetrics(admin);
    const first = post(g.url, '/api/v2/write?precision=s', body('one'), auth); // ~42 KB encoded: waits on the lock
    await new Promise((r) => setTimeout(r, 300));
    const second = await post(g.url, '/api/v2/write?precision=s', body('two'), auth);
    expect(second.status).toBe(429);
    expect(second.headers.get('retry-after')).toBe('1');
    expect(second.body.message).toMatch(/the gateway's queue is full/);
    await lock.release();
    expect((await first).status).toBe(204);
    expect(await count(admin, `series_id IN (SELECT id FROM strata.series WHERE measurement = 'bp' AND tags->>'r' = 'one')`)).toBe(1_000);
    expect(await count(admin, `series_id IN (SELECT id FROM strata.series WHERE measurement = 'bp' AND tags->>'r' = 'two')`)).toBe(0);
  });

  it('waits for a slow database instead of spooling: a batch timing out while others commit is retried, not taken for an outage', async () => {
    await admin.exec(`CREATE FUNCTION strata.slow_row() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN IF NEW.value = -42 THEN PERFORM pg_sleep(1.5); END IF; RETURN NEW; END $$`);
    await admin.exec('CREATE TRIGGER slow_row BEFORE INSERT ON strata.metrics FOR EACH ROW EXECUTE FUNCTION strata.slow_row()');
    try {
      const g = await start({ attemptTimeoutMs: 300, maxAttempts: 2, batchAgeMs: 5 });
      const auth = { Authorization: `Token ${fac.token}` };
      const slow = post(g.url, '/api/v2/write?precision=s', 'slowdb,k=slow v=-42 1700000000', auth);
      const others: Promise<{ status: number }>[] = [];
      for (let i = 0; i < 30; i++) {
        others.push(post(g.url, '/api/v2/write?precision=s', `slowdb,k=fast v=${i} ${1_700_000_000 + i}`, auth));
        await new Promise((r) => setTimeout(r, 60));
      }
      expect((await slow).status).toBe(204);
      expect((await Promise.all(others)).map((r) => r.status)).toEqual(Array(30).fill(204));
      expect(await metric(g, 'strata_ingest_rows_spooled_total')).toBe(0);
      expect(g.writer.down).toBe(false);
      expect(await metric(g, 'strata_ingest_retries_total')).toBeGreaterThanOrEqual(2); // it did time out, more than its budget of 2 attempts allows
      expect(await count(admin, `series_id IN (SELECT id FROM strata.series WHERE measurement = 'slowdb' AND tags->>'k' = 'slow')`)).toBe(1);
      expect(await count(admin, `series_id IN (SELECT id FROM strata.series WHERE measurement = 'slowdb' AND tags->>'k' = 'fast')`)).toBe(30);
    } finally {
      await admin.exec('DROP TRIGGER slow_row ON strata.metrics; DROP FUNCTION strata.slow_row()');
    }
  });

  it('counts gzip bodies against the memory budget as they expand: 429 instead of unbounded growth', async () => {
    const g = await start({ maxQueueBytes: 1 << 20 });
    const text = Array.from({ length: 100_000 }, (_, i) => `bomb v=${i} ${1_700_000_000 + i}`).join('\n'); // ~2.9 MB, gzips to ~300 KB
    const body = gzipSync(text);
    expect(body.length).toBeLessThan(1 << 20);
    const r = await post(g.url, '/api/v2/write?precision=s', body, { Authorization: `Token ${fac.token}`, 'Content-Encoding': 'gzip' });
    expect(r.status).toBe(429);
    expect(r.headers.get('retry-after')).toBe('1');
    expect(r.body.message).toBe("the gateway's queue is full; retry later");
    expect(await count(admin, `series_id IN (SELECT id FROM strata.series WHERE measurement = 'bomb')`)).toBe(0);
    expect((await post(g.url, '/api/v2/write?precision=s', 'bomb v=1 1700000000', { Authorization: `Token ${fac.token}` })).status).toBe(204);
  });

  it('refuses to start on a database without the Strata schema, naming the problem', async () => {
    const empty = await createDatabase(cluster().adminUrl(), 'strata_empty');
    const edb = await openDb(cluster().bouncerUrl(empty.name), { max: 2 });
    try {
      await expect(gateway(edb, {})).rejects.toThrow(/cannot load facilities from .*relation "strata.facilities" does not exist/);
    } finally {
      await edb.close();
      await empty.drop();
    }
  });

  it('does not prune the ledger while its spool still holds batches, and does once they are replayed', async () => {
    const g = await start({ replayIntervalMs: 3_600_000, ledgerPruneEveryMs: 0, ledgerRetention: '2 days', attemptTimeoutMs: 300, maxAttempts: 1 });
    await g.replayer.tick(); // the pass started with the gateway has run (with an empty spool it may prune)
    const old = randomUUID();
    await admin.query(`INSERT INTO strata.ingest_ledger (batch_id, facility_id, row_count, committed_at) VALUES ($1, $2, 1, now() - interval '3 days')`, [old, fac.id]);
    const series = await admin.query<{ id: number }>(`INSERT INTO strata.series (facility_id, measurement, field) VALUES ($1, 'spooled', 'v') RETURNING id`, [fac.id]);
    const rows = encodeTuples([{ timeUs: 1_700_000_000_000_000n, facilityId: fac.id, seriesId: series.rows[0]!.id, value: 1 }]);
    await g.spool.append([{ batchId: randomUUID(), facilityId: fac.id, rowCount: 1, rows, spooledAt: Date.now() }]);
    const lock = await lockMetrics(admin);
    await g.replayer.tick(); // the replay times out: the batch stays spooled
    expect(g.spool.empty).toBe(false);
    const kept = await admin.query('SELECT 1 FROM strata.ingest_ledger WHERE batch_id = $1', [old]);
    expect(kept.rows).toHaveLength(1);
    await lock.release();
    for (let i = 0; i < 3 && !g.spool.empty; i++) await g.replayer.tick(); // probe, replay, then prune
    await g.replayer.tick();
    expect(g.spool.empty).toBe(true);
    expect(await count(admin, `series_id = ${series.rows[0]!.id}`)).toBe(1);
    const gone = await admin.query('SELECT 1 FROM strata.ingest_ledger WHERE batch_id = $1', [old]);
    expect(gone.rows).toHaveLength(0);
  });

  it('quarantines a corrupt spool segment found at start, reports it, and keeps serving', async () => {
    const spoolDir = tempDir();
    writeFileSync(join(spoolDir, 'seg-0000000000000001.spool'), Buffer.from('this is not a spool segment'));
    const g = await start({ spoolDir, replayIntervalMs: 100 });
    await g.replayer.tick();
    expect(await metric(g, 'strata_ingest_spool_quarantined_segments_total')).toBe(1);
    expect(readdirSync(join(spoolDir, 'quarantine')).sort()).toEqual(['seg-0000000000000001.spool', 'seg-0000000000000001.spool.reason.txt']);
    expect(g.spool.empty).toBe(true);
    expect((await post(g.url, '/api/v2/write?precision=s', 'after_quarantine v=1 1700000000', { Authorization: `Token ${fac.token}` })).status).toBe(204);
    expect((await fetch(`${g.url}/ready`)).status).toBe(200);
  });

  it('prunes ledger rows older than the retention and keeps recent ones', async () => {
    const g = await start({ ledgerRetention: '2 days' });
    const old = randomUUID();
    const recent = randomUUID();
    await admin.query(`INSERT INTO strata.ingest_ledger (batch_id, facility_id, row_count, committed_at) VALUES ($1, $3, 1, now() - interval '3 days'), ($2, $3, 1, now() - interval '1 day')`, [old, recent, fac.id]);
    expect(await g.replayer.prune()).toBeGreaterThanOrEqual(1);
    const left = await admin.query<{ batch_id: string }>('SELECT batch_id FROM strata.ingest_ledger WHERE batch_id IN ($1, $2)', [old, recent]);
    expect(left.rows).toEqual([{ batch_id: recent }]);
  });
});
