// STRATA_INGEST_MODE=columnstore on a real TimescaleDB (PGlite-TimescaleDB always, a server too
// when STRATA_TEST_TIMESCALE_URL is set): where the release cannot keep direct compress on a
// hypertable with a continuous aggregate (before 2.24, PGlite's 2.23) the gateway says so and
// writes to the row store; where it can (a server of 2.24 or later, or PGlite once the rollup is
// dropped) rows land in compressed chunks, exactly once, read back row for row, late and out of
// order ones too, behind the facility barrier; tiering moves and recompresses such a chunk without
// changing a row, and the archive takes one and restores exactly its rows.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { migrate } from '../../src/db/migrate.ts';
import type { Db } from '../../src/db/port.ts';
import { addFacility } from '../../src/facilities/registry.ts';
import type { Batch } from '../../src/ingest/batcher.ts';
import { encodeTuples } from '../../src/ingest/copy-encode.ts';
import { DIRECT_COMPRESS, decideIngestMode } from '../../src/ingest/ingest-mode.ts';
import type { Logger } from '../../src/log.ts';
import { silentLogger } from '../../src/log.ts';
import { listEntries } from '../../src/backup/archive/catalog.ts';
import { runArchive } from '../../src/backup/archive/job.ts';
import { restoreArchive } from '../../src/backup/archive/restore.ts';
import { ArchiveStore } from '../../src/backup/archive/s3.ts';
import type { ArchiveSettings } from '../../src/backup/archive/settings.ts';
import { readChunks } from '../../src/jobs/chunks.ts';
import { runTiering } from '../../src/tiering/job.ts';
import { tierPolicy } from '../../src/jobs/policy.ts';
import { tablespace, timescaleTargets, uniqueName } from '../support/databases.ts';
import { gateway, post, stored, tempDir } from '../support/gateway.ts';
import { S3_CREDENTIALS, startS3 } from '../support/s3.ts';

const HOUR = 3_600_000;
const CHECKSUM = `count(*)::int AS n, md5(coalesce(string_agg(facility_id || ':' || series_id || ':' || time::text || ':' || value::text, ',' ORDER BY time, series_id, value), '')) AS sum`;

/** A logger that keeps what it is told, to check what the gateway says at start. */
function recordingLogger(lines: { level: string; msg: string; fields: Record<string, unknown> }[]): Logger {
  const make = (): Logger => ({
    debug: () => {},
    info: (msg, fields = {}) => void lines.push({ level: 'info', msg, fields }),
    warn: (msg, fields = {}) => void lines.push({ level: 'warn', msg, fields }),
    error: (msg, fields = {}) => void lines.push({ level: 'error', msg, fields }),
    child: () => make(),
  });
  return make();
}

describe.each(timescaleTargets())('columnstore ingest on $name', (target) => {
  let db: Db;
  let url: string;
  let close: () => Promise<void>;
  let version = '';
  const drops: (() => Promise<void>)[] = [];
  const A = { code: uniqueName('csa'), id: 0, token: '', role: '' };
  const B = { code: uniqueName('csb'), id: 0, token: '', role: '' };
  const anchor = Math.floor(Date.now() / HOUR) * HOUR - 2 * HOUR;
  /** What was sent, per series key as stored() names it: `time(µs)=value`. */
  const sent = new Map<string, string[]>();
  /** The chunk written to the row store by the fallback test (PGlite's release), if any. */
  let rowstoreChunk: string | null = null;

  const keep = (key: string, ms: number, v: number) => {
    const list = sent.get(key) ?? [];
    list.push(`${ms * 1000}=${v}`);
    sent.set(key, list);
  };
  /** Lines for `f`: `n` rows per series of two series, times from `from` in steps of `stepMs`, in the order given. */
  function lines(f: { code: string }, from: number, n: number, stepMs: number, order: 'forward' | 'backward' | 'shuffled'): string {
    const rows: string[] = [];
    for (let i = 0; i < n; i++) {
      for (const cell of ['c1', 'c2']) {
        const ms = from + i * stepMs;
        const v = Math.round((i * 0.25 + (cell === 'c1' ? 1 : 2)) * 1000) / 1000;
        keep(`press.temp cell=${cell},site=${f.code}`, ms, v);
        rows.push(`press,site=${f.code},cell=${cell} temp=${v} ${ms}`);
      }
    }
    if (order === 'backward') rows.reverse();
    if (order === 'shuffled') rows.sort((a, b) => (a.length * 31 + a.charCodeAt(a.length - 3)) % 7 - (b.length * 31 + b.charCodeAt(b.length - 3)) % 7);
    return rows.join('\n') + '\n';
  }
  const write = async (token: string, base: string, body: string) => post(base, '/api/v2/write?precision=ms', body, { Authorization: `Token ${token}` });
  const chunks = async () => (await db.query<{ chunk: string; compressed: boolean }>(`SELECT format('%I.%I', chunk_schema, chunk_name) AS chunk, is_compressed AS compressed FROM timescaledb_information.chunks WHERE hypertable_name = 'metrics' ORDER BY range_start`)).rows;
  const perChunk = async () => {
    const out: Record<string, { n: number; sum: string }> = {};
    for (const c of await chunks()) out[c.chunk] = (await db.query<{ n: number; sum: string }>(`SELECT ${CHECKSUM} FROM ${c.chunk}`)).rows[0]!;
    return out;
  };

  /** Every row sent is stored once, row for row. */
  const expectStoredAsSent = async () => {
    const want = new Map([...sent].map(([k, v]) => [k, [...v].sort((a, b) => Number(a.split('=')[0]) - Number(b.split('=')[0]) || a.localeCompare(b))]));
    const got = await stored(db);
    expect(new Map([...got].sort())).toEqual(new Map([...want].sort()));
  };

  beforeAll(async () => {
    ({ db, url, close } = await target.open({ max: 4 }));
    await migrate(db, { chunkInterval: '1 hour' });
    version = (await db.query<{ v: string }>(`SELECT extversion AS v FROM pg_extension WHERE extname = 'timescaledb'`)).rows[0]!.v;
    for (const f of [A, B]) {
      const r = await addFacility(db, { code: f.code, region: 'test-1' });
      Object.assign(f, { id: r.facility.id, token: r.token, role: r.facility.readerRole });
    }
  });

  afterAll(async () => {
    await close?.();
    for (const d of drops) await d().catch(() => {});
  });

  it('keeps the row store, saying why at start, where the release turns direct compress off with a continuous aggregate', async () => {
    const [major = 0, minor = 0] = version.split('.').map(Number);
    const decision = await decideIngestMode(db, 'columnstore');
    if (major > 2 || minor >= 24) {
      expect(decision).toEqual({ mode: 'columnstore', wanted: 'columnstore', fallback: null });
      return;
    }
    expect(decision.mode).toBe('rowstore');
    expect(decision.fallback).toMatch(/continuous aggregate \(strata\.metrics_hourly\); 2\.24 and later keep it on; writing to the row store/);
    const said: { level: string; msg: string; fields: Record<string, unknown> }[] = [];
    const gw = await gateway(db, { ingestMode: 'columnstore', region: 'test-1' }, recordingLogger(said));
    try {
      expect(said.find((l) => l.msg.startsWith('ingest mode'))).toMatchObject({ level: 'info', msg: 'ingest mode: columnstore asked for, rowstore used', fields: { reason: decision.fallback } });
      const r = await write(A.token, gw.url, `press,site=${A.code},cell=c0 temp=1 ${anchor - 5 * HOUR}\n`);
      expect(r.status).toBe(204);
      // Written, and to the row store: the chunk is not compressed.
      const chunk = (await chunks()).at(0)!;
      expect(chunk.compressed).toBe(false);
      rowstoreChunk = chunk.chunk;
      keep(`press.temp cell=c0,site=${A.code}`, anchor - 5 * HOUR, 1);
    } finally {
      await gw.stop();
    }
  });

  it('writes compressed chunks where the release can, every row exactly once, late and out of order ones too', async () => {
    if ((await decideIngestMode(db, 'columnstore')).mode === 'rowstore') {
      // PGlite's 2.23: the rollup is what turns direct compress off (see above); without it the
      // release compresses on COPY, which is what this test needs.
      await db.exec('DROP MATERIALIZED VIEW strata.metrics_hourly CASCADE');
    }
    const said: { level: string; msg: string; fields: Record<string, unknown> }[] = [];
    const gw = await gateway(db, { ingestMode: 'columnstore', region: 'test-1', batchRows: 200 }, recordingLogger(said));
    try {
      expect(said.find((l) => l.msg.startsWith('ingest mode'))).toMatchObject({ level: 'info', msg: 'ingest mode: columnstore' });
      const replies = await Promise.all([
        write(A.token, gw.url, lines(A, anchor, 150, 1_000, 'forward')),
        write(B.token, gw.url, lines(B, anchor, 150, 1_000, 'backward')),
        // Out of order inside one request; then (below) late rows into hours already written compressed.
        write(A.token, gw.url, lines(A, anchor + HOUR + 30 * 60_000, 120, 2_000, 'shuffled')),
      ]);
      expect(replies.map((r) => r.status)).toEqual([204, 204, 204]);
      expect((await write(A.token, gw.url, lines(A, anchor + 500, 40, 1_000, 'forward'))).status).toBe(204);
      expect((await write(B.token, gw.url, lines(B, anchor - HOUR, 60, 30_000, 'shuffled'))).status).toBe(204);

      // A batch committed, then sent again with the same id (a retry after a lost answer): the ledger keeps it once.
      const dup: Batch = { id: '00000000-0000-4000-8000-0000000000c5', facilityId: A.id, rowCount: 1, bytes: 42, parts: [] };
      const rows = encodeTuples([{ timeUs: BigInt(anchor + 59 * 60_000) * 1000n, facilityId: A.id, seriesId: (await db.query<{ id: number }>(`SELECT id FROM strata.series WHERE facility_id = $1 ORDER BY id LIMIT 1`, [A.id])).rows[0]!.id, value: 42.5 }]);
      expect(await gw.writer.commit(dup.id, A.id, 1, [rows])).toBe('committed');
      expect(await gw.writer.commit(dup.id, A.id, 1, [rows])).toBe('duplicate');
      const firstKey = (await db.query<{ k: string }>(`SELECT s.measurement || '.' || s.field || ' ' || (SELECT string_agg(k || '=' || v, ',' ORDER BY k) FROM jsonb_each_text(s.tags) t(k, v)) AS k FROM strata.series s WHERE facility_id = $1 ORDER BY id LIMIT 1`, [A.id])).rows[0]!.k;
      keep(firstKey, anchor + 59 * 60_000, 42.5);
    } finally {
      await gw.stop();
    }
    await expectStoredAsSent();
    // Every chunk written in this mode is compressed; the setting did not outlive its transactions.
    const written = (await chunks()).filter((c) => c.chunk !== rowstoreChunk);
    expect(written.length).toBeGreaterThanOrEqual(3);
    for (const c of written) expect(c).toMatchObject({ compressed: true });
    expect((await db.query<{ s: string }>(`SELECT current_setting('${DIRECT_COMPRESS}') AS s`)).rows[0]!.s).toBe('off');
    const states = await readChunks(db);
    expect(states.filter((c) => c.chunk !== rowstoreChunk).every((c) => c.compressed && c.unordered)).toBe(true);
  });

  it('takes concurrent writes from two gateways into the same compressed hours, every row exactly once', async () => {
    const gateways = [
      await gateway(db, { ingestMode: 'columnstore', region: 'test-1', batchRows: 100, writers: 3 }),
      await gateway(db, { ingestMode: 'columnstore', region: 'test-1', batchRows: 100, writers: 3 }),
    ];
    try {
      // Eight requests at once, both facilities through both gateways, into the hours written above.
      const replies = await Promise.all(
        Array.from({ length: 8 }, (_, k) => {
          const f = k % 2 === 0 ? A : B;
          return write(f.token, gateways[(k >> 1) % 2]!.url, lines(f, anchor + 300 + k * 7_000, 60, 45_000, k % 3 === 0 ? 'backward' : 'shuffled'));
        }),
      );
      expect(replies.map((r) => r.status)).toEqual(Array(8).fill(204));
    } finally {
      for (const g of gateways) await g.stop();
    }
    await expectStoredAsSent();
    for (const c of (await chunks()).filter((c) => c.chunk !== rowstoreChunk)) expect(c).toMatchObject({ compressed: true });
  });

  it.skipIf(target.name === 'pglite-timescaledb')('keeps the hourly rollup exact: refreshed over chunks written compressed, and again after late rows into a refreshed hour (a server only: PGlite 2.23 writes to the row store while the rollup exists)', async () => {
    const [mat] = (await db.query<{ m: string }>(`SELECT format('%I.%I', materialization_hypertable_schema, materialization_hypertable_name) AS m FROM timescaledb_information.continuous_aggregates WHERE view_schema = 'strata' AND view_name = 'metrics_hourly'`)).rows;
    const until = new Date(anchor + 3 * HOUR).toISOString();
    const ROLLUP = `count(*)::int AS n, md5(string_agg(bucket::text || ':' || facility_id || ':' || series_id || ':' || samples || ':' || round(sum::numeric, 6) || ':' || min || ':' || max, ',' ORDER BY bucket, facility_id, series_id)) AS sum`;
    const raw = async () =>
      (await db.query<{ n: number; sum: string }>(
        `SELECT ${ROLLUP} FROM (SELECT time_bucket(INTERVAL '1 hour', time) AS bucket, facility_id, series_id, count(*) AS samples, sum(value) AS sum, min(value) AS min, max(value) AS max FROM strata.metrics WHERE time < '${until}' GROUP BY 1, 2, 3) r`,
      )).rows[0]!;
    const materialized = async () => (await db.query<{ n: number; sum: string }>(`SELECT ${ROLLUP} FROM ${mat!.m} WHERE bucket < '${until}'`)).rows[0]!;
    const refresh = () => db.exec(`CALL refresh_continuous_aggregate('strata.metrics_hourly', NULL, '${until}')`);
    await refresh();
    const first = await raw();
    expect(first.n).toBeGreaterThanOrEqual(8);
    expect(await materialized()).toEqual(first);
    // Late rows, written compressed into an hour already materialized: invalidated, so the next refresh counts them.
    const gw = await gateway(db, { ingestMode: 'columnstore', region: 'test-1' });
    try {
      expect((await write(A.token, gw.url, lines(A, anchor + 20 * 60_000 + 123, 30, 1_000, 'shuffled'))).status).toBe(204);
    } finally {
      await gw.stop();
    }
    const second = await raw();
    expect(second.sum).not.toBe(first.sum);
    expect(await materialized()).toEqual(first);
    await refresh();
    expect(await materialized()).toEqual(second);
    await expectStoredAsSent();
  });

  it("shows A's reader exactly A's rows from the compressed chunks, the facility filter reaching the compressed segments", async () => {
    const as = <R,>(sql: string) =>
      db.transaction(async (tx) => {
        await tx.exec(`SET LOCAL ROLE "${A.role}"`);
        await tx.exec('SET LOCAL enable_seqscan = off');
        return (await tx.query<R>(sql)).rows;
      });
    const mine = (await db.query<{ n: number; sum: string }>(`SELECT ${CHECKSUM} FROM strata.metrics WHERE facility_id = $1`, [A.id])).rows[0]!;
    expect((await as<{ n: number; sum: string }>(`SELECT ${CHECKSUM} FROM strata.facility_metrics`))[0]).toEqual(mine);
    const plan = (await as<{ 'QUERY PLAN': string }>(`EXPLAIN (COSTS OFF) SELECT series_id, avg(value) FROM strata.facility_metrics WHERE time >= '${new Date(anchor).toISOString()}' GROUP BY 1`)).map((r) => r['QUERY PLAN']).join('\n');
    expect(plan).toMatch(/compress_hyper_\d+_\d+_chunk/);
    expect(plan).toMatch(/facility_id = ANY/);
  });

  it('compacts the hot chunks written compressed once their hour is an hour past, in place, one full batch per series, every row unchanged', async () => {
    const before = await perChunk();
    /** Compressed batches and segments (facility, series) of a chunk: fully compacted, one batch per segment (each holds under 1,000 rows here). */
    const batches = async (chunk: string) => (await db.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${await compressedOf(chunk)}`)).rows[0]!.n;
    const compressedOf = async (chunk: string) =>
      (await db.query<{ c: string }>(
        `SELECT format('%I.%I', cc.schema_name, cc.table_name) AS c FROM _timescaledb_catalog.chunk ch JOIN _timescaledb_catalog.chunk cc ON cc.id = ch.compressed_chunk_id WHERE format('%I.%I', ch.schema_name, ch.table_name) = $1`,
        [chunk],
      )).rows[0]!.c;
    const segments = async (chunk: string) => (await db.query<{ n: number }>(`SELECT count(DISTINCT (facility_id, series_id))::int AS n FROM ${chunk}`)).rows[0]!.n;
    const written = new Map<string, number>();
    for (const c of await readChunks(db)) if (c.chunk !== rowstoreChunk) written.set(c.chunk, await batches(c.chunk));
    // At half past the hour after the last hour written: the chunks ending by then minus an hour are due.
    const at = new Date(anchor + 2 * HOUR + 30 * 60_000);
    const summary = await runTiering(db, silentLogger, { policy: tierPolicy({}), at });
    expect(summary.failures).toEqual([]);
    const after = await readChunks(db);
    const due = after.filter((c) => c.chunk !== rowstoreChunk && c.rangeEnd.getTime() <= at.getTime() - HOUR);
    const open = after.filter((c) => c.chunk !== rowstoreChunk && c.rangeEnd.getTime() > at.getTime() - HOUR);
    expect(due.length).toBeGreaterThanOrEqual(2);
    expect(open.length).toBe(1);
    // Written as small batches (one per series and COPY), now one full batch per series.
    let batchesWritten = 0;
    let segmentsDue = 0;
    for (const c of due) {
      expect(c).toMatchObject({ compressed: true, unordered: false, partial: false, tablespace: null });
      batchesWritten += written.get(c.chunk)!;
      segmentsDue += await segments(c.chunk);
      expect(await batches(c.chunk)).toBe(await segments(c.chunk));
    }
    expect(batchesWritten).toBeGreaterThan(segmentsDue);
    // The hour still open to late rows stays as written; a row-store chunk is never compressed here.
    expect(open[0]).toMatchObject({ compressed: true, unordered: true });
    if (rowstoreChunk) expect(after.find((c) => c.chunk === rowstoreChunk)).toMatchObject({ compressed: false });
    expect(await perChunk()).toEqual(before);
  });

  it('moves a chunk written compressed to warm and recompresses it, every row unchanged', async () => {
    const warm = await tablespace(db, url, 'warm_data');
    const cold = await tablespace(db, url, 'cold_data');
    drops.push(warm.drop, cold.drop);
    const before = await perChunk();
    // A clock 40 days ahead makes every chunk written above warm.
    const later = new Date(Date.now() + 40 * 24 * HOUR);
    await runTiering(db, silentLogger, { policy: tierPolicy({ warmTablespace: warm.name, coldTablespace: cold.name }), at: later });
    const after = await readChunks(db);
    const direct = after.filter((c) => c.chunk !== rowstoreChunk);
    expect(direct.length).toBeGreaterThanOrEqual(3);
    for (const c of direct) expect(c).toMatchObject({ compressed: true, unordered: false, partial: false, tablespace: warm.name, compressedTablespace: warm.name });
    // The chunk still as written until now (the open hour above) was recompressed on its way.
    expect(direct.filter((c) => c.rangeEnd.getTime() === anchor + 2 * HOUR)).toHaveLength(1);
    expect(await perChunk()).toEqual(before);
  });

  it('archives a chunk written compressed and restores every one of its rows', async () => {
    const old = anchor - 20 * 30 * 24 * HOUR;
    const gw = await gateway(db, { ingestMode: 'columnstore', region: 'test-1' });
    try {
      expect((await write(A.token, gw.url, lines(A, old, 90, 10_000, 'shuffled'))).status).toBe(204);
    } finally {
      await gw.stop();
    }
    const from = new Date(old - HOUR);
    const to = new Date(old + 2 * HOUR);
    const rows = `SELECT ${CHECKSUM} FROM %s WHERE time >= $1 AND time < $2`;
    const archived = (await db.query<{ n: number; sum: string }>(rows.replace('%s', 'strata.metrics'), [from, to])).rows[0]!;
    expect(archived.n).toBe(180);
    expect((await readChunks(db)).find((c) => c.rangeStart.getTime() <= old && c.rangeEnd.getTime() > old)).toMatchObject({ compressed: true });
    const s3 = await startS3(['columnstore-test-1']);
    const settings: ArchiveSettings = { region: 'test-1', bucket: 'columnstore-test-1', prefix: 'strata', storageClass: 'STANDARD', objectLock: null, retention: '7 years', restoreTier: 'Standard', restoreDays: 1, workDir: tempDir('strata-work-'), endpoint: s3.endpoint, credentials: S3_CREDENTIALS };
    const store = new ArchiveStore(settings);
    try {
      const r = await runArchive(db, store, silentLogger, { settings, policy: tierPolicy({}) });
      expect(r.failures).toEqual([]);
      expect((await listEntries(db)).map((e) => e.rows)).toEqual([180]);
      expect((await db.query<{ n: number }>(`SELECT count(*)::int AS n FROM strata.metrics WHERE time >= $1 AND time < $2`, [from, to])).rows[0]!.n).toBe(0);
      await db.exec('CREATE SCHEMA IF NOT EXISTS restored');
      const back = await restoreArchive(db, store, silentLogger, { settings, from, to, into: 'restored.columnstore' });
      expect(back.failures).toEqual([]);
      expect((await db.query<{ n: number; sum: string }>(rows.replace('%s', 'restored.columnstore'), [from, to])).rows[0]).toEqual(archived);
    } finally {
      store.close();
      await s3.stop();
    }
  });
});
