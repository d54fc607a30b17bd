// A damaged spool record costs only its own bytes: the intact records after it replay (into the
// database, exactly once), the damage is quarantined with a reason, logged once and counted.
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { openDb } from '../../src/db/open.ts';
import type { Db } from '../../src/db/port.ts';
import { createIngestMetrics, type IngestMetrics } from '../../src/ingest/metrics.ts';
import { Spool, spoolBytes } from '../../src/ingest/spool.ts';
import { createLogger, silentLogger } from '../../src/log.ts';
import { cluster, createDatabase, type TestDatabase } from '../support/databases.ts';
import { facility, gateway, plainSchema } from '../support/gateway.ts';
import { batches, offsetOf, sealedSegment } from '../support/spool-records.ts';

async function counter(m: IngestMetrics, name: string): Promise<number> {
  return ((await m.registry.getSingleMetric(name)?.get())?.values ?? []).reduce((n, v) => n + v.value, 0);
}

let dir: string;
beforeEach(async () => { dir = await mkdtemp(join(tmpdir(), 'spool-damage-')); });
afterEach(async () => { await rm(dir, { recursive: true, force: true }); });

describe('spool damage, in the spool', () => {
  it('a flipped byte in the middle record of a 30-record segment: the 29 others replay once, the damaged one is quarantined, logged and counted', async () => {
    const records = batches(30, 1000, 7);
    const name = await sealedSegment(dir, records);
    const at = offsetOf(records, 15);
    const size = spoolBytes([records[15]!]);
    const buf = await readFile(join(dir, name));
    buf[at + 12 + 32 + 5000] = buf[at + 12 + 32 + 5000]! ^ 0x10; // inside the rows of record 15
    await writeFile(join(dir, name), buf);

    const lines: { level: string; msg: string; rows?: number; start?: number }[] = [];
    const metrics = createIngestMetrics({ defaults: false });
    const s = await Spool.open({ dir, maxBytes: 1 << 30, metrics, logger: createLogger('debug', (l) => lines.push(JSON.parse(l))) });
    try {
      const got: string[] = [];
      const report = await s.replay(async (r) => { got.push(r.batchId); });
      expect(got).toEqual(records.filter((_, i) => i !== 15).map((r) => r.batchId));
      expect(report).toEqual({ records: 29, segments: 1, quarantined: 1 });
      expect((await s.replay(async (r) => { got.push(r.batchId); })).records).toBe(0);
      expect(got).toHaveLength(29);
      expect(await readdir(dir)).toEqual(['quarantine', 'spool.lock']);

      const kept = `${name}.${at}-${at + size}.damaged`;
      expect((await readdir(join(dir, 'quarantine'))).sort()).toEqual([kept, `${kept}.reason.txt`]);
      expect(await readFile(join(dir, 'quarantine', kept))).toEqual(buf.subarray(at, at + size));
      const reason = await readFile(join(dir, 'quarantine', `${kept}.reason.txt`), 'utf8');
      expect(reason).toContain(`segment: ${name} (sealed, ${buf.length} bytes)`);
      expect(reason).toContain(`crc32 mismatch at byte offset ${at}; the next intact record starts at byte offset ${at + size}`);
      expect(reason).toContain(`batch ${records[15]!.batchId} facility 7 rows 1000`);
      expect(reason).toMatch(/^rows: 1000 /m);

      expect(await counter(metrics, 'strata_ingest_spool_damaged_records_total')).toBe(1);
      expect(await counter(metrics, 'strata_ingest_spool_damaged_bytes_total')).toBe(size);
      expect(await counter(metrics, 'strata_ingest_spool_damaged_rows_total')).toBe(1000);
      const errors = lines.filter((l) => l.level === 'error');
      expect(errors).toHaveLength(1);
      expect(errors[0]).toMatchObject({ start: at, rows: 1000 });
    } finally {
      await s.close();
    }
  });

  it('a zeroed 4 KiB page in the middle of a segment: the records around it replay, the records it touches are quarantined', async () => {
    const records = batches(30, 40, 3); // 1724 bytes a record: the page covers parts of records 9, 10 and 11
    const name = await sealedSegment(dir, records);
    const buf = await readFile(join(dir, name));
    buf.fill(0, 16384, 20480);
    await writeFile(join(dir, name), buf);

    const metrics = createIngestMetrics({ defaults: false });
    const s = await Spool.open({ dir, maxBytes: 1 << 30, metrics, logger: silentLogger });
    try {
      const got: string[] = [];
      const report = await s.replay(async (r) => { got.push(r.batchId); });
      expect(got).toEqual(records.filter((_, i) => i < 9 || i > 11).map((r) => r.batchId));
      expect(report).toEqual({ records: 27, segments: 1, quarantined: 1 });
      const [start, end] = [offsetOf(records, 9), offsetOf(records, 12)];
      const reason = await readFile(join(dir, 'quarantine', `${name}.${start}-${end}.damaged.reason.txt`), 'utf8');
      const zeros = /(\d+) zero bytes at 16384-(\d+)/.exec(reason); // the page, plus any zero row bytes right after it
      expect(Number(zeros?.[1])).toBeGreaterThanOrEqual(4096);
      expect(reason).toMatch(/^records: at least 2$/m); // record 9's header, then bytes whose headers are gone
      expect(await counter(metrics, 'strata_ingest_spool_damaged_bytes_total')).toBe(end - start);
      expect(await counter(metrics, 'strata_ingest_spool_damaged_rows_total')).toBe(40);
    } finally {
      await s.close();
    }
  });

  it('a magic number inside payload bytes is not taken for a record header', async () => {
    const records = batches(3, 10, 1);
    // Row bytes of record 1 that look like a record header: magic, a plausible length, a wrong crc.
    const fake = Buffer.alloc(12);
    fake.writeUInt32BE(0x53545350, 0); fake.writeUInt32BE(64, 4); fake.writeUInt32BE(12345, 8);
    fake.copy(records[1]!.rows, 40);
    const name = await sealedSegment(dir, records);
    const buf = await readFile(join(dir, name));
    const at = offsetOf(records, 1);
    buf[at + 12 + 1] = buf[at + 12 + 1]! ^ 0xff; // record 1 damaged before the fake header
    await writeFile(join(dir, name), buf);
    const s = await Spool.open({ dir, maxBytes: 1 << 30, logger: silentLogger });
    try {
      const got: string[] = [];
      expect(await s.replay(async (r) => { got.push(r.batchId); })).toEqual({ records: 2, segments: 1, quarantined: 1 });
      expect(got).toEqual([records[0]!.batchId, records[2]!.batchId]);
      expect(await readdir(join(dir, 'quarantine'))).toContain(`${name}.${at}-${offsetOf(records, 2)}.damaged`);
    } finally {
      await s.close();
    }
  });
});

describe('spool damage, through a gateway into the database', () => {
  let t: TestDatabase;
  let admin: Db;
  let db: Db;
  let fac: { id: number };
  beforeAll(async () => {
    t = await createDatabase(cluster().adminUrl(), 'strata_spool_damage');
    admin = await openDb(t.url);
    await plainSchema(admin);
    fac = await facility(admin, 'spool-dmg');
    db = await openDb(cluster().bouncerUrl(t.name), { max: 4 });
  });
  afterAll(async () => {
    await db?.close();
    await admin?.close();
    await t?.drop();
  });

  it('a gateway started on a segment with one damaged record commits the 29 intact ones exactly once and counts the damage', async () => {
    const records = batches(30, 1000, fac.id);
    const name = await sealedSegment(dir, records);
    const buf = await readFile(join(dir, name));
    const at = offsetOf(records, 15);
    buf[at + 12 + 40] = buf[at + 12 + 40]! ^ 0x01;
    await writeFile(join(dir, name), buf);

    const g = await gateway(db, { spoolDir: dir, replayIntervalMs: 50 });
    try {
      while (!g.spool.empty) await g.replayer.tick(); // each pass replays what is there; the loop ends when it is gone
      const r = await admin.query<{ n: number; distinct: number; series: number }>(
        'SELECT count(*)::int AS n, count(DISTINCT (series_id, time))::int AS distinct, count(DISTINCT series_id)::int AS series FROM strata.metrics');
      expect(r.rows[0]).toEqual({ n: 29_000, distinct: 29_000, series: 29 });
      expect((await admin.query('SELECT 1 FROM strata.metrics WHERE series_id = 16 LIMIT 1')).rows).toHaveLength(0);
      expect(await counter(g.metrics, 'strata_ingest_spool_damaged_records_total')).toBe(1);
      expect(await counter(g.metrics, 'strata_ingest_spool_damaged_rows_total')).toBe(1000);
      expect(await counter(g.metrics, 'strata_ingest_spool_quarantined_segments_total')).toBe(1);
    } finally {
      await g.stop();
    }
  });
});
