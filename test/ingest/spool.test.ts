// The disk spool: what is acknowledged survives a restart and is replayed once, in order; corruption
// is quarantined without stopping the rest; one process owns a spool dir at a time.
import { spawn } from 'node:child_process';
import { mkdtemp, open, readdir, readFile, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { createIngestMetrics, type IngestMetrics } from '../../src/ingest/metrics.ts';
import { Spool, SpoolFullError, spoolBytes, type SpoolOptions } from '../../src/ingest/spool.ts';
import type { SpoolRecord } from '../../src/ingest/types.ts';
import { createLogger, silentLogger } from '../../src/log.ts';

const REPO = fileURLToPath(new URL('../..', import.meta.url));
const ROWS = 10;
const SIZE = 12 + 32 + ROWS; // bytes of one record on disk with ROWS row bytes

function rec(i: number, rows = ROWS): SpoolRecord {
  const bytes = Buffer.alloc(rows);
  for (let j = 0; j < rows; j++) bytes[j] = (i * 31 + j * 7) & 0xff;
  return { batchId: `0000abcd-0000-4000-8000-${i.toString(16).padStart(12, '0')}`, facilityId: i % 2 ? -i : i, rowCount: i * 3, rows: bytes, spooledAt: 1_700_000_000_000 + i + 0.5 };
}
const range = (from: number, to: number) => Array.from({ length: to - from }, (_, k) => rec(from + k));

let dir: string;
const spools: Spool[] = [];
beforeEach(async () => { dir = await mkdtemp(join(tmpdir(), 'spool-test-')); });
afterEach(async () => {
  for (const s of spools.splice(0)) await s.close();
  await rm(dir, { recursive: true, force: true });
});

async function openSpool(opts: Partial<SpoolOptions> = {}): Promise<Spool> {
  const s = await Spool.open({ dir, maxBytes: 1 << 20, logger: silentLogger, ...opts });
  spools.push(s);
  return s;
}
async function closeSpool(s: Spool): Promise<void> {
  spools.splice(spools.indexOf(s), 1);
  await s.close();
}
const segments = async () => (await readdir(dir)).filter((n) => n.startsWith('seg-')).sort();
const diskBytes = async () => (await Promise.all((await segments()).map((n) => stat(join(dir, n))))).reduce((n, s) => n + s.size, 0);
async function drain(s: Spool): Promise<{ got: SpoolRecord[]; report: Awaited<ReturnType<Spool['replay']>> }> {
  const got: SpoolRecord[] = [];
  const report = await s.replay(async (r) => { got.push(r); });
  return { got, report };
}
/** Spool with segments of exactly `perSegment` records each, filled one append at a time, then closed. */
async function fill(count: number, perSegment: number): Promise<void> {
  const s = await openSpool({ segmentBytes: perSegment * SIZE });
  for (const r of range(0, count)) await s.append([r]);
  await closeSpool(s);
}
async function counter(m: IngestMetrics, name: string): Promise<number> {
  return ((await m.registry.getSingleMetric(name)?.get())?.values ?? []).reduce((n, v) => n + v.value, 0);
}
function capture() {
  const lines: { level: string; msg: string; file?: string }[] = [];
  return { lines, logger: createLogger('debug', (l) => lines.push(JSON.parse(l))) };
}
function runNode(code: string): Promise<{ pid: number; exit: Promise<number | null> }> {
  const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code], { cwd: REPO, stdio: ['ignore', 'pipe', 'inherit'] });
  const exit = new Promise<number | null>((res) => child.on('exit', (c, sig) => res(sig ? -1 : c)));
  return new Promise((res, rej) => { child.on('spawn', () => res({ pid: child.pid!, exit })); child.on('error', rej); });
}

describe('spool: durability and order', () => {
  it('append, close, reopen: replay yields the same records in order and deletes the files', async () => {
    const first = await openSpool();
    const want = [rec(1), rec(2, 0), rec(3, 300), { ...rec(4), batchId: 'FFFFFFFF-FFFF-4FFF-BFFF-FFFFFFFFFFFF', facilityId: -(2 ** 31), rowCount: 2 ** 32 - 1 }];
    await first.append(want.slice(0, 2));
    await first.append(want.slice(2));
    await closeSpool(first);
    expect(await segments()).toHaveLength(1);

    const s = await openSpool();
    expect(s.empty).toBe(false);
    const { got, report } = await drain(s);
    expect(got).toEqual(want.map((r) => ({ ...r, batchId: r.batchId.toLowerCase() })));
    expect(report).toEqual({ records: 4, segments: 1, quarantined: 0 });
    expect(await segments()).toEqual([]);
    expect([s.empty, s.bytes, s.oldestSpooledAt]).toEqual([true, 0, null]);
  });

  it('bytes, oldestSpooledAt and empty follow appends, reopen and replay', async () => {
    const s = await openSpool();
    expect([s.empty, s.bytes, s.oldestSpooledAt]).toEqual([true, 0, null]);
    await s.append([rec(5), rec(6, 100)]);
    await s.append([rec(7)]);
    expect(s.bytes).toBe(spoolBytes([rec(5), rec(6, 100), rec(7)]));
    expect(s.bytes).toBe(await diskBytes());
    expect([s.empty, s.oldestSpooledAt]).toEqual([false, rec(5).spooledAt]);
    await closeSpool(s);

    const again = await openSpool();
    expect([again.bytes, again.oldestSpooledAt, again.empty]).toEqual([await diskBytes(), rec(5).spooledAt, false]);
    await again.append([rec(8)]);
    expect(again.oldestSpooledAt).toBe(rec(5).spooledAt);
    await drain(again);
    expect([again.bytes, again.oldestSpooledAt, again.empty]).toEqual([0, null, true]);
  });

  it('replays several segments in sequence order; appends during a replay land in a later segment', async () => {
    await fill(10, 2);
    expect(await segments()).toHaveLength(5);
    const s = await openSpool({ segmentBytes: 2 * SIZE });
    await s.append([rec(10)]); // active segment of this process, sealed by replay
    const got: SpoolRecord[] = [];
    const report = await s.replay(async (r) => {
      got.push(r);
      if (r.batchId === rec(3).batchId) await s.append([rec(11)]);
      if (r.batchId === rec(7).batchId) await Promise.all([s.append([rec(12)]), s.append([rec(13)])]);
    });
    expect(got.map((r) => r.batchId)).toEqual(range(0, 11).map((r) => r.batchId));
    expect(report).toEqual({ records: 11, segments: 6, quarantined: 0 });
    expect(s.empty).toBe(false);
    const later = await drain(s);
    expect(later.got).toEqual(range(11, 14));
    expect(await segments()).toEqual([]);
  });

  it('a commit failing mid-replay keeps that segment and the later ones; the next replay delivers the rest', async () => {
    await fill(9, 3); // segments [0,1,2] [3,4,5] [6,7,8]
    const s = await openSpool();
    const names = await segments();
    const got: string[] = [];
    const boom = new Error('database went away');
    await expect(s.replay(async (r) => {
      if (r.batchId === rec(4).batchId) throw boom;
      got.push(r.batchId);
    })).rejects.toBe(boom);
    expect(await segments()).toEqual(names.slice(1));
    expect(s.bytes).toBe(6 * SIZE);
    expect(s.oldestSpooledAt).toBe(rec(3).spooledAt);

    const { got: rest, report } = await drain(s);
    got.push(...rest.map((r) => r.batchId));
    // Only record 3 (the committed part of the failed segment) repeats.
    expect(got).toEqual([0, 1, 2, 3, 3, 4, 5, 6, 7, 8].map((i) => rec(i).batchId));
    expect(report).toEqual({ records: 6, segments: 2, quarantined: 0 });
    expect(s.empty).toBe(true);
  });

  it('a second replay called while one runs waits for it: every record is committed once', async () => {
    await fill(6, 2);
    const s = await openSpool();
    const seen: string[] = [];
    const slow = async (r: SpoolRecord) => { await new Promise((res) => setTimeout(res, 2)); seen.push(r.batchId); };
    const [a, b] = await Promise.all([s.replay(slow), s.replay(slow)]);
    expect(seen).toEqual(range(0, 6).map((r) => r.batchId));
    expect([a.records, b.records]).toEqual([6, 0]);
  });

  it('50 concurrent appends all land exactly once, sharing fsyncs', async () => {
    const s = await openSpool({ segmentBytes: 8 * SIZE });
    const probe = await open(join(dir, 'probe'), 'w');
    const datasync = vi.spyOn(Object.getPrototypeOf(probe) as { datasync(): Promise<void> }, 'datasync');
    await probe.close();
    try {
      await Promise.all(Array.from({ length: 50 }, (_, i) => s.append([rec(2 * i), rec(2 * i + 1)])));
      expect(datasync.mock.calls.length).toBeGreaterThan(0);
      expect(datasync.mock.calls.length).toBeLessThan(10);
    } finally { datasync.mockRestore(); }
    expect(s.bytes).toBe(100 * SIZE);
    expect(s.bytes).toBe(await diskBytes());
    const { got } = await drain(s);
    expect(got).toEqual(range(0, 100));
  });

  it('close waits for in-flight appends; appends after close are refused', async () => {
    const s = await openSpool();
    const pending = s.append([rec(1)]);
    await closeSpool(s);
    await expect(pending).resolves.toBeUndefined();
    await expect(s.append([rec(2)])).rejects.toMatchObject({ code: 'spool_closed' });
    expect(await readdir(dir)).not.toContain('spool.lock');
    expect((await drain(await openSpool())).got).toEqual([rec(1)]);
  });
});

describe('spool: limits and bad input', () => {
  it('refuses an append over maxBytes with SpoolFullError and writes nothing', async () => {
    const s = await openSpool({ maxBytes: 3 * SIZE });
    await s.append([rec(1), rec(2)]);
    expect(s.wouldOverflow(SIZE)).toBe(false);
    expect(s.wouldOverflow(SIZE + 1)).toBe(true);
    const err = await s.append([rec(3), rec(4)]).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SpoolFullError);
    expect(err).toMatchObject({ code: 'spool_full' });
    expect((err as Error).message).toContain(dir);
    expect((err as Error).message).toMatch(new RegExp(`${2 * SIZE} bytes used.*${3 * SIZE} bytes`));
    expect(s.bytes).toBe(2 * SIZE);
    expect(await diskBytes()).toBe(2 * SIZE);
    await s.append([rec(5)]); // exactly at the limit still fits
    expect((await drain(s)).got).toEqual([rec(1), rec(2), rec(5)]);
  });

  it.each([
    ['a batchId that is not a uuid', { batchId: 'batch-1' }, /not a uuid/],
    ['a fractional facilityId', { facilityId: 1.5 }, /not an int4/],
    ['a negative rowCount', { rowCount: -1 }, /not a u32/],
    ['a NaN spooledAt', { spooledAt: Number.NaN }, /not finite/],
  ])('refuses %s and writes nothing of the append', async (_name, patch, message) => {
    const s = await openSpool();
    await expect(s.append([rec(1), { ...rec(2), ...patch }])).rejects.toThrow(message);
    expect([s.bytes, await diskBytes()]).toEqual([0, 0]);
  });
});

describe('spool: corruption and torn tails', () => {
  // Three segments of four records; record 6 (third of the second segment) starts at byte 2*SIZE.
  const at = 2 * SIZE;
  it.each([
    ['a flipped payload byte', (b: Buffer) => { b[at + 12 + 20] = b[at + 12 + 20]! ^ 0x40; }, /crc32 mismatch at byte offset 108/],
    ['a flipped magic byte', (b: Buffer) => { b[at] = b[at]! ^ 0x01; }, /bad magic 0x52545350 at byte offset 108/],
    ['a length running past the end over complete records', (b: Buffer) => { b.writeUInt32BE(10_000, at + 4); }, /payload length 10000 runs past the end .* at byte offset 108/],
  ])('%s: only the damaged record is quarantined, with a reason; every other record replays', async (_name, damage, reason) => {
    await fill(12, 4);
    const [, victim] = await segments();
    const buf = await readFile(join(dir, victim!));
    damage(buf);
    await writeFile(join(dir, victim!), buf);

    const { lines, logger } = capture();
    const s = await openSpool({ logger });
    const { got, report } = await drain(s);
    expect(got).toEqual([...range(0, 6), ...range(7, 12)]);
    expect(report).toEqual({ records: 11, segments: 3, quarantined: 1 });
    expect(s.quarantinedSegments).toBe(1);
    expect(await segments()).toEqual([]);
    expect(s.bytes).toBe(0);
    const kept = `${victim}.${at}-${at + SIZE}.damaged`;
    expect((await readdir(join(dir, 'quarantine'))).sort()).toEqual([kept, `${kept}.reason.txt`]);
    expect(await readFile(join(dir, 'quarantine', kept))).toEqual(buf.subarray(at, at + SIZE));
    expect(await readFile(join(dir, 'quarantine', `${kept}.reason.txt`), 'utf8')).toMatch(reason);
    expect(lines.filter((l) => l.level === 'error' && l.file === join(dir, victim!))).toHaveLength(1);

    expect(await drain(s)).toEqual({ got: [], report: { records: 0, segments: 0, quarantined: 0 } });
    expect(s.quarantinedSegments).toBe(1);
  });

  it('quarantines a garbage file named like a segment and still replays the segments after it', async () => {
    const garbage = Buffer.from('this is not a spool segment at all, just some text\n'.repeat(20));
    await writeFile(join(dir, 'seg-0000000000000001.spool'), garbage);
    const s = await openSpool();
    await s.append([rec(1)]);
    expect(s.bytes).toBe(garbage.length + SIZE);
    expect(s.oldestSpooledAt).toBe(rec(1).spooledAt);
    const { got, report } = await drain(s);
    expect(got).toEqual([rec(1)]);
    expect(report).toEqual({ records: 1, segments: 1, quarantined: 1 });
    expect(await readFile(join(dir, 'quarantine', 'seg-0000000000000001.spool.reason.txt'), 'utf8')).toMatch(/bad magic .* at byte offset 0/);
    expect(s.empty).toBe(true);
  });

  /** Three records appended one at a time by a process killed with SIGKILL: its segment stays active-named. */
  async function crashFill(count: number): Promise<string> {
    const records = range(0, count).map((r) => ({ ...r, rows: r.rows.toString('hex') }));
    const { exit } = await runNode(`
      import { Spool } from './src/ingest/spool.ts';
      const s = await Spool.open({ dir: ${JSON.stringify(dir)}, maxBytes: 1 << 20 });
      for (const r of ${JSON.stringify(records)}) await s.append([{ ...r, rows: Buffer.from(r.rows, 'hex') }]);
      process.kill(process.pid, 'SIGKILL');`);
    expect(await exit).toBe(-1);
    const names = await segments();
    expect(names).toEqual(['seg-0000000000000001.active.spool']);
    return names[0]!;
  }
  const cuts = [
    ['part of the last payload missing', 3],
    ['only 5 bytes of the last header left', SIZE - 5],
    ['the last header complete, its payload missing', SIZE - 12],
  ] as const;

  it.each(cuts)('torn tail of the active segment of a crashed process (%s): the complete records replay, the tail is dropped and counted', async (_name, cut) => {
    const name = await crashFill(3);
    await truncate(join(dir, name), 3 * SIZE - cut);
    const { lines, logger } = capture();
    const metrics = createIngestMetrics({ defaults: false });
    const s = await openSpool({ logger, metrics });
    const { got, report } = await drain(s);
    expect(got).toEqual(range(0, 2));
    expect(report).toEqual({ records: 2, segments: 1, quarantined: 0 });
    expect(await readdir(dir)).toEqual(['spool.lock']);
    expect(lines.some((l) => l.level === 'warn' && /torn tail/.test(l.msg))).toBe(true);
    expect(lines.some((l) => l.level === 'error')).toBe(false);
    expect(await counter(metrics, 'strata_ingest_spool_torn_tails_total')).toBe(1);
  });

  it.each(cuts)('the same cut in a sealed segment (%s) is kept in quarantine and counted, not dropped', async (_name, cut) => {
    await fill(3, 3);
    const [name] = await segments();
    expect(name).toBe('seg-0000000000000001.spool'); // sealed by close()
    await truncate(join(dir, name!), 3 * SIZE - cut);
    const metrics = createIngestMetrics({ defaults: false });
    const s = await openSpool({ metrics });
    const { got, report } = await drain(s);
    expect(got).toEqual(range(0, 2));
    expect(report).toEqual({ records: 2, segments: 1, quarantined: 1 });
    const kept = `${name}.${2 * SIZE}-${3 * SIZE - cut}.damaged`;
    expect((await readdir(join(dir, 'quarantine'))).sort()).toEqual([kept, `${kept}.reason.txt`]);
    expect(await readFile(join(dir, 'quarantine', `${kept}.reason.txt`), 'utf8')).toMatch(/segment: seg-0000000000000001\.spool \(sealed.*at byte offset 108; no intact record follows/s);
    expect(await counter(metrics, 'strata_ingest_spool_damaged_records_total')).toBe(1);
    expect(await counter(metrics, 'strata_ingest_spool_damaged_bytes_total')).toBe(SIZE - cut);
    expect(await counter(metrics, 'strata_ingest_spool_torn_tails_total')).toBe(0);
  });

  it('in a crashed active segment only the last record may be torn: a complete last record with a bad crc is quarantined', async () => {
    const name = await crashFill(3);
    const buf = await readFile(join(dir, name));
    buf[buf.length - 1] = buf[buf.length - 1]! ^ 0xff;
    await writeFile(join(dir, name), buf);
    const metrics = createIngestMetrics({ defaults: false });
    const s = await openSpool({ metrics });
    const { got, report } = await drain(s);
    expect(got).toEqual(range(0, 2));
    expect(report.quarantined).toBe(1);
    expect(await counter(metrics, 'strata_ingest_spool_damaged_records_total')).toBe(1);
    expect(await counter(metrics, 'strata_ingest_spool_torn_tails_total')).toBe(0);
  });

  it('a zero-filled tail (file size extended, data lost in a crash) is a torn tail of a crashed active segment, damage in a sealed one', async () => {
    const name = await crashFill(2);
    await truncate(join(dir, name), 2 * SIZE + 4096);
    const s = await openSpool();
    const { got, report } = await drain(s);
    expect(got).toEqual(range(0, 2));
    expect(report.quarantined).toBe(0);
    await closeSpool(s);

    await fill(2, 2);
    const [sealed] = await segments();
    await truncate(join(dir, sealed!), 2 * SIZE + 4096);
    const again = await openSpool();
    const second = await drain(again);
    expect(second.got).toEqual(range(0, 2));
    expect(second.report.quarantined).toBe(1);
    expect(await readFile(join(dir, 'quarantine', `${sealed}.${2 * SIZE}-${2 * SIZE + 4096}.damaged.reason.txt`), 'utf8')).toMatch(/4096 zero bytes/);
  });
});

describe('spool: single owner', () => {
  it('refuses a dir locked by a live process, naming the dir and pid', async () => {
    const { pid, exit } = await runNode('setTimeout(() => {}, 30_000)');
    try {
      await writeFile(join(dir, 'spool.lock'), `${pid}\n`);
      const err = await Spool.open({ dir, maxBytes: 1 << 20 }).catch((e: unknown) => e);
      expect(err).toMatchObject({ code: 'spool_locked' });
      expect((err as Error).message).toContain(dir);
      expect((err as Error).message).toContain(String(pid));
      expect(await readFile(join(dir, 'spool.lock'), 'utf8')).toBe(`${pid}\n`);
    } finally {
      process.kill(pid, 'SIGTERM');
      await exit;
    }
  });

  it('refuses a second open of the same dir in this process until the first closes', async () => {
    const s = await openSpool();
    await expect(Spool.open({ dir, maxBytes: 1 << 20 })).rejects.toMatchObject({ code: 'spool_locked' });
    await closeSpool(s);
    await openSpool();
    expect((await readFile(join(dir, 'spool.lock'), 'utf8')).trim()).toBe(String(process.pid));
  });

  it('takes over the lock of a dead pid', async () => {
    const { pid, exit } = await runNode('');
    await exit;
    await writeFile(join(dir, 'spool.lock'), `${pid}\n`);
    const s = await openSpool();
    expect((await readFile(join(dir, 'spool.lock'), 'utf8')).trim()).toBe(String(process.pid));
    await closeSpool(s);
    expect(await readdir(dir)).not.toContain('spool.lock');
  });

  it('after a gateway is killed with SIGKILL, the next one takes over and replays every acknowledged record', async () => {
    const records = range(0, 20).map((r) => ({ ...r, rows: r.rows.toString('hex') }));
    const { exit } = await runNode(`
      import { Spool } from './src/ingest/spool.ts';
      const s = await Spool.open({ dir: ${JSON.stringify(dir)}, maxBytes: 1 << 20, segmentBytes: ${5 * SIZE} });
      for (const r of ${JSON.stringify(records)}) await s.append([{ ...r, rows: Buffer.from(r.rows, 'hex') }]);
      process.kill(process.pid, 'SIGKILL');`);
    expect(await exit).toBe(-1);
    expect(await readdir(dir)).toContain('spool.lock');
    const s = await openSpool();
    expect(s.oldestSpooledAt).toBe(rec(0).spooledAt);
    await s.append([rec(20)]);
    expect((await drain(s)).got).toEqual(range(0, 21));
  });
});
