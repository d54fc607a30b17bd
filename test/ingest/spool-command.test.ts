// `strata spool inspect` and `strata spool replay`, run as an operator would: real processes of
// bin/strata.js against a spool dir and a database.
import { execFile, spawn } from 'node:child_process';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { openDb } from '../../src/db/open.ts';
import type { Db } from '../../src/db/port.ts';
import { BINARY_HEADER, BINARY_TRAILER, METRICS_COPY_BINARY } from '../../src/ingest/copy-encode.ts';
import { spoolBytes } from '../../src/ingest/spool.ts';
import type { SpoolRecord } from '../../src/ingest/types.ts';
import { cluster, createDatabase, type TestDatabase } from '../support/databases.ts';
import { facility, plainSchema } from '../support/gateway.ts';
import { batches, offsetOf, sealedSegment } from '../support/spool-records.ts';

const REPO = fileURLToPath(new URL('../..', import.meta.url));
const BIN = join(REPO, 'bin/strata.js');

function strata(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number; out: string; err: string }> {
  return new Promise((res) => {
    execFile(process.execPath, [BIN, ...args], { env: { PATH: process.env.PATH, STRATA_LOG_LEVEL: 'warn', ...env }, maxBuffer: 64 << 20 }, (error, stdout, stderr) => {
      res({ code: error ? ((error as { code?: number }).code ?? 1) : 0, out: stdout, err: stderr });
    });
  });
}

let dir: string;
beforeEach(async () => { dir = await mkdtemp(join(tmpdir(), 'spool-cmd-')); });
afterEach(async () => { await rm(dir, { recursive: true, force: true }); });

/** A 30-record segment with record 10 damaged, quarantined whole as older releases did (records 0-9 committed then). */
async function oldQuarantine(records: SpoolRecord[]): Promise<{ name: string; at: number; size: number }> {
  const work = join(dir, 'work');
  await mkdir(work);
  const name = await sealedSegment(work, records);
  const buf = await readFile(join(work, name));
  const at = offsetOf(records, 10);
  buf[at + 12 + 32 + 7] = buf[at + 12 + 32 + 7]! ^ 0x20;
  await mkdir(join(dir, 'quarantine'));
  await writeFile(join(dir, 'quarantine', name), buf);
  await writeFile(join(dir, 'quarantine', `${name}.reason.txt`), `${name}: crc32 mismatch at byte offset ${at}; the 10 records before it were committed\n`);
  await rm(work, { recursive: true });
  return { name, at, size: spoolBytes([records[10]!]) };
}

describe('strata spool inspect', () => {
  it('lists segments and quarantine files with their records, rows, bytes and damage, as text and as JSON', async () => {
    const records = batches(30, 10, 4);
    const q = await oldQuarantine(records);
    const live = batches(5, 20, 4);
    const seg = await sealedSegment(dir, live);
    const buf = await readFile(join(dir, seg));
    const at = offsetOf(live, 2);
    buf[at + 50] = buf[at + 50]! ^ 1;
    await writeFile(join(dir, seg), buf);

    const text = await strata(['spool', 'inspect', dir]);
    expect(text).toMatchObject({ code: 0, err: '' });
    expect(text.out).toContain(`spool ${dir}: not locked`);
    expect(text.out).toContain(`segments: 1, 4 records, 80 rows, ${buf.length} bytes; damage: 1 span, ${spoolBytes([live[2]!])} bytes`);
    expect(text.out).toContain(`  ${seg}  sealed  4 records  80 rows  ${buf.length} bytes`);
    expect(text.out).toContain(`    damaged bytes ${at}-${offsetOf(live, 3)} (${spoolBytes([live[2]!])} bytes, 1 record, 20 rows): crc32 mismatch at byte offset ${at}`);
    expect(text.out).toContain('quarantine: 1 file, 19 intact records (190 rows) to replay with strata spool replay');
    expect(text.out).toContain(`  quarantine/${q.name}  ${offsetOf(records, 30)} bytes  29 intact records (19 to replay, 190 rows; 10 before byte ${q.at} were committed before it was quarantined)`);
    expect(text.out).toContain(`    damaged bytes ${q.at}-${q.at + q.size} (${q.size} bytes, 1 record, 10 rows): crc32 mismatch at byte offset ${q.at}`);
    expect(text.out).not.toContain('record @');

    const withRecords = await strata(['spool', 'inspect', '--records', dir]);
    expect(withRecords.out).toContain(`    record @0  ${spoolBytes([live[0]!])} bytes  batch ${live[0]!.batchId}  facility 4  20 rows  spooled 2023-11-14T22:13:20.000Z`);

    const json = await strata(['spool', 'inspect', dir, '--json']);
    expect(json.code).toBe(0);
    const r = JSON.parse(json.out) as { dir: string; lock: unknown; segments: { name: string; state: string; records: { batchId: string }[]; rows: number; damage: { start: number; rows: number }[] }[]; quarantine: { name: string; replayable: number; committedBefore: number }[] };
    expect(r).toMatchObject({ dir, lock: null });
    expect(r.segments).toHaveLength(1);
    expect(r.segments[0]).toMatchObject({ name: seg, state: 'sealed', rows: 80, damage: [{ start: at, rows: 20 }] });
    expect(r.segments[0]!.records.map((x) => x.batchId)).toEqual(live.filter((_, i) => i !== 2).map((x) => x.batchId));
    expect(r.quarantine).toMatchObject([{ name: q.name, replayable: 19, committedBefore: q.at }]);
  });

  it('says what is wrong with its arguments', async () => {
    expect(await strata(['spool'])).toMatchObject({ code: 64, err: expect.stringContaining('strata spool: unknown subcommand (none); use inspect or replay') });
    expect(await strata(['spool', 'inspect'])).toMatchObject({ code: 64, err: expect.stringContaining('the spool directory is required') });
    expect(await strata(['spool', 'inspect', join(dir, 'nope')])).toMatchObject({ code: 1, err: expect.stringContaining(`no spool directory at ${join(dir, 'nope')}`) });
  });

  it('while a gateway holds the dir: inspect looks (read-only), replay refuses and changes nothing', async () => {
    await oldQuarantine(batches(30, 10, 4));
    const holder = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', `
      import { Spool } from './src/ingest/spool.ts';
      await Spool.open({ dir: ${JSON.stringify(dir)}, maxBytes: 1 << 20 });
      console.log('ready');
      setInterval(() => {}, 1000);`], { cwd: REPO, stdio: ['ignore', 'pipe', 'inherit'] });
    try {
      await new Promise<void>((res, rej) => {
        holder.stdout!.on('data', (d: Buffer) => { if (d.toString().includes('ready')) res(); });
        holder.on('exit', (code) => rej(new Error(`the holder exited with ${code}`)));
      });
      const look = await strata(['spool', 'inspect', dir]);
      expect(look.code).toBe(0);
      expect(look.out).toContain(`held by running process ${holder.pid} (${join(dir, 'spool.lock')}); this is a live view`);
      const before = (await readdir(join(dir, 'quarantine'))).sort();
      const r = await strata(['spool', 'replay', dir], { STRATA_DATABASE_URL: 'postgres://nobody@127.0.0.1:1/none' });
      expect(r.code).toBe(75);
      expect(r.err).toContain(`strata: strata spool replay: ${dir} is held by running process ${holder.pid} (${join(dir, 'spool.lock')}); stop that gateway first`);
      expect((await readdir(join(dir, 'quarantine'))).sort()).toEqual(before);
    } finally {
      holder.kill('SIGKILL');
    }
  });
});

describe('strata spool replay', () => {
  let t: TestDatabase;
  let admin: Db;
  let fac: { id: number };
  beforeAll(async () => {
    t = await createDatabase(cluster().adminUrl(), 'strata_spool_cmd');
    admin = await openDb(t.url);
    await plainSchema(admin);
    fac = await facility(admin, 'spool-cmd');
  });
  afterAll(async () => {
    await admin?.close();
    await t?.drop();
  });

  it('commits the intact records of a quarantined segment exactly once, keeps only the damaged bytes, and a second run duplicates nothing', async () => {
    await admin.exec('TRUNCATE strata.metrics, strata.ingest_ledger');
    const records = batches(30, 1000, fac.id);
    const q = await oldQuarantine(records);
    // What the older gateway did before it quarantined the segment: it committed records 0-9.
    for (const r of records.slice(0, 10)) {
      await admin.transaction(async (tx) => {
        await tx.query('INSERT INTO strata.ingest_ledger (batch_id, facility_id, row_count) VALUES ($1, $2, $3)', [r.batchId, r.facilityId, r.rowCount]);
        await tx.copyIn(METRICS_COPY_BINARY, [BINARY_HEADER, r.rows, BINARY_TRAILER]);
      });
    }
    const env = { STRATA_DATABASE_URL: cluster().bouncerUrl(t.name) };
    const rows = async () => (await admin.query<{ n: number; distinct: number }>('SELECT count(*)::int AS n, count(DISTINCT (series_id, time))::int AS distinct FROM strata.metrics')).rows[0];

    const first = await strata(['spool', 'replay', dir], env);
    expect(first.err).toBe('');
    expect(first.code).toBe(0);
    const kept = `${q.name}.${q.at}-${q.at + q.size}.damaged`;
    expect(first.out).toContain(`quarantine/${q.name}: committed 19 records (19000 rows), 0 already in the database, 10 skipped (committed before it was quarantined); damaged bytes kept as quarantine/${kept}; removed`);
    expect(first.out).toContain('replayed 19 records (19000 rows) from 1 file; 0 already in the database; 1 file left in quarantine/');
    expect(await rows()).toEqual({ n: 29_000, distinct: 29_000 });
    expect((await readdir(join(dir, 'quarantine'))).sort()).toEqual([kept, `${kept}.reason.txt`]);
    const reason = await readFile(join(dir, 'quarantine', `${kept}.reason.txt`), 'utf8');
    expect(reason).toContain(`damaged: bytes ${q.at}-${q.at + q.size} (${q.size} bytes, 1 record, 1000 rows): crc32 mismatch at byte offset ${q.at}`);
    expect(reason).toContain(`its reason was: ${q.name}: crc32 mismatch at byte offset ${q.at}`);
    expect(await readdir(dir)).not.toContain('spool.lock');

    const second = await strata(['spool', 'replay', dir, '--json'], env);
    expect(second.code).toBe(0);
    expect(JSON.parse(second.out)).toMatchObject({ files: [{ file: kept, intact: 0, committed: 0, removed: false }] });
    expect(await rows()).toEqual({ n: 29_000, distinct: 29_000 });

    // The whole segment again, without its reason file: every intact record is found in the ledger by its batch id.
    await rm(join(dir, 'quarantine'), { recursive: true });
    const again = await oldQuarantine(records);
    await rm(join(dir, 'quarantine', `${again.name}.reason.txt`));
    const third = await strata(['spool', 'replay', dir], env);
    expect(third.code).toBe(0);
    expect(third.out).toContain(`quarantine/${again.name}: committed 0 records (0 rows), 29 already in the database`);
    expect(await rows()).toEqual({ n: 29_000, distinct: 29_000 });
  });

  it('with nothing intact in quarantine it needs no database', async () => {
    const r = await strata(['spool', 'replay', dir]);
    expect(r).toMatchObject({ code: 0, out: expect.stringContaining(`nothing to replay: ${join(dir, 'quarantine')} is empty`) });
  });
});
