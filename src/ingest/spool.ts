// Disk spool of the ingest gateway: batches the database could not take are appended to segment
// files, fsynced, and only then acknowledged; replay() later feeds them to the database in order and
// deletes a segment only after every record in it committed.
//   <dir>/seg-<16-digit seq>.spool   segments; sequence order is replay order
//   <dir>/spool.lock                 pid of the owning process
//   <dir>/quarantine/                corrupt segments, each with <name>.reason.txt
// Record: magic u32 | payload length u32 | crc32(payload) u32 | payload, big-endian. Payload:
// batchId (16 uuid bytes) | facilityId i32 | rowCount u32 | spooledAt f64 (ms) | rows.
// Concurrency: every write, fsync and seal of the active segment runs on one serial queue (fileOp);
// appends queued while a write+fsync is in flight are written and fsynced together by the next one
// (group commit). replay() seals the active segment through that queue and reads only sealed
// segments, which are never written again; appends during a replay go to a new segment. Replays run
// one at a time: a second call waits for the running one to settle, then runs itself.
import { link, mkdir, open, readdir, readFile, rename, rm, stat, writeFile, type FileHandle } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { crc32 } from 'node:zlib';
import { StrataError, errorText } from '../errors.ts';
import { silentLogger, type Logger } from '../log.ts';
import type { SpoolRecord } from './types.ts';

export interface SpoolOptions {
  dir: string;
  maxBytes: number;
  segmentBytes?: number;
  logger?: Logger;
}
/** records: committed; segments: fully replayed and deleted; quarantined: moved to quarantine/. */
export interface ReplayReport { records: number; segments: number; quarantined: number }

export class SpoolFullError extends StrataError {
  constructor(dir: string, used: number, requested: number, limit: number) {
    super('spool_full', `spool ${dir} is full: ${used} bytes used + ${requested} requested exceeds the limit of ${limit} bytes`);
    this.name = 'SpoolFullError';
  }
}

const MAGIC = 0x53545350; // "STSP"
const MAGIC_BYTES = Buffer.from([0x53, 0x54, 0x53, 0x50]);
const HEADER = 12;
const FIXED = 32; // uuid 16 + facilityId 4 + rowCount 4 + spooledAt 8
const MAX_PAYLOAD = 256 * 1024 * 1024;
const SEGMENT = /^seg-(\d{16})\.spool$/;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const openDirs = new Set<string>(); // dirs open in this process (the lock file holds only a pid)

/** Bytes `records` take on disk once appended. */
export function spoolBytes(records: readonly SpoolRecord[]): number {
  return records.reduce((n, r) => n + HEADER + FIXED + r.rows.length, 0);
}

function encode(records: readonly SpoolRecord[]): Buffer {
  const out = Buffer.alloc(spoolBytes(records));
  let o = 0;
  records.forEach((r, i) => {
    const bad = (what: string) => new StrataError('spool_record', `spool record ${i} (batch ${r.batchId}): ${what}`);
    if (!UUID.test(r.batchId)) throw bad('batchId is not a uuid');
    if (!Number.isInteger(r.facilityId) || r.facilityId < -(2 ** 31) || r.facilityId >= 2 ** 31) throw bad(`facilityId ${r.facilityId} is not an int4`);
    if (!Number.isInteger(r.rowCount) || r.rowCount < 0 || r.rowCount >= 2 ** 32) throw bad(`rowCount ${r.rowCount} is not a u32`);
    if (!Number.isFinite(r.spooledAt)) throw bad(`spooledAt ${r.spooledAt} is not finite`);
    if (FIXED + r.rows.length > MAX_PAYLOAD) throw bad(`${r.rows.length} row bytes exceed the record limit`);
    const len = FIXED + r.rows.length;
    const p = out.subarray(o + HEADER, o + HEADER + len);
    Buffer.from(r.batchId.replace(/-/g, ''), 'hex').copy(p, 0);
    p.writeInt32BE(r.facilityId, 16); p.writeUInt32BE(r.rowCount, 20); p.writeDoubleBE(r.spooledAt, 24);
    r.rows.copy(p, FIXED);
    out.writeUInt32BE(MAGIC, o); out.writeUInt32BE(len, o + 4); out.writeUInt32BE(crc32(p), o + 8);
    o += HEADER + len;
  });
  return out;
}

type Parsed = { kind: 'record'; record: SpoolRecord; end: number } | { kind: 'torn'; reason: string } | { kind: 'corrupt'; reason: string };

const allZero = (buf: Buffer, from: number) => buf.subarray(from).every((b) => b === 0);

/** True when a complete record with a valid crc starts somewhere at or after `from`. */
function validRecordAfter(buf: Buffer, from: number): boolean {
  for (let p = buf.indexOf(MAGIC_BYTES, from); p >= 0 && p + HEADER <= buf.length; p = buf.indexOf(MAGIC_BYTES, p + 1)) {
    const len = buf.readUInt32BE(p + 4);
    if (len >= FIXED && p + HEADER + len <= buf.length && crc32(buf.subarray(p + HEADER, p + HEADER + len)) === buf.readUInt32BE(p + 8)) return true;
  }
  return false;
}

/** The record at `off`; a torn tail is an incomplete last record (or a zero-filled tail) with nothing valid after it. */
function parseAt(buf: Buffer, off: number): Parsed {
  const rest = buf.length - off;
  if (allZero(buf, off)) return { kind: 'torn', reason: `${rest} zero bytes` };
  if (rest < HEADER) {
    const head = buf.subarray(off, off + Math.min(rest, 4));
    return head.equals(MAGIC_BYTES.subarray(0, head.length)) ? { kind: 'torn', reason: `incomplete header (${rest} bytes)` } : { kind: 'corrupt', reason: 'bad magic' };
  }
  const magic = buf.readUInt32BE(off);
  if (magic !== MAGIC) return { kind: 'corrupt', reason: `bad magic 0x${magic.toString(16).padStart(8, '0')}` };
  const len = buf.readUInt32BE(off + 4);
  if (len < FIXED || len > MAX_PAYLOAD) return { kind: 'corrupt', reason: `bad payload length ${len}` };
  const end = off + HEADER + len;
  if (end > buf.length) {
    return validRecordAfter(buf, off + HEADER)
      ? { kind: 'corrupt', reason: `payload length ${len} runs past the end of the file (${buf.length} bytes) over complete records` }
      : { kind: 'torn', reason: `payload of ${rest - HEADER} of ${len} bytes` };
  }
  const p = buf.subarray(off + HEADER, end);
  if (crc32(p) !== buf.readUInt32BE(off + 8)) return { kind: 'corrupt', reason: 'crc32 mismatch' };
  const spooledAt = p.readDoubleBE(24);
  if (!Number.isFinite(spooledAt)) return { kind: 'corrupt', reason: 'spooledAt is not finite' };
  const h = p.toString('hex', 0, 16);
  const batchId = `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
  const record = { batchId, facilityId: p.readInt32BE(16), rowCount: p.readUInt32BE(20), rows: Buffer.from(p.subarray(FIXED)), spooledAt };
  return { kind: 'record', record, end };
}

interface Segment { seq: number; name: string; path: string; size: number; firstSpooledAt: number | null; fh?: FileHandle }
interface Pending { buf: Buffer; first: number; resolve: () => void; reject: (err: unknown) => void }

const segName = (seq: number) => `seg-${String(seq).padStart(16, '0')}.spool`;
function isAlive(pid: number): boolean {
  try { process.kill(pid, 0); return true; } catch (err) { return (err as NodeJS.ErrnoException).code === 'EPERM'; } // EPERM: alive, another user's
}

async function fsyncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try { await fh.sync(); } finally { await fh.close(); }
}

/** Atomically create `<dir>/spool.lock` holding our pid (write a temp file, hard-link it into place). */
async function acquireLock(dir: string, lockPath: string, log: Logger): Promise<void> {
  const tmp = `${lockPath}.${process.pid}.tmp`;
  await writeFile(tmp, `${process.pid}\n`);
  try {
    for (let attempt = 0; ; attempt++) {
      try { await link(tmp, lockPath); await fsyncDir(dir); return; } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST' || attempt >= 2) throw err;
      }
      const text = (await readFile(lockPath, 'utf8').catch(() => '')).trim();
      const pid = Number(text);
      if (Number.isInteger(pid) && pid > 0 && pid !== process.pid && isAlive(pid)) {
        throw new StrataError('spool_locked', `spool ${dir} is locked by running process ${pid} (${lockPath}); stop it or give this gateway another spool dir`);
      }
      log.warn('taking over the lock of a spool whose owner is gone', { dir, pid: text });
      await rm(lockPath, { force: true });
    }
  } finally { await rm(tmp, { force: true }); }
}

/** The spooledAt of the first record of a segment file, or null when it has no valid first record. */
async function firstSpooledAt(path: string, size: number): Promise<number | null> {
  const fh = await open(path, 'r');
  try {
    const head = Buffer.alloc(Math.min(size, HEADER));
    await fh.read(head, 0, head.length, 0);
    const len = head.length === HEADER ? head.readUInt32BE(4) : 0;
    if (head.length < HEADER || head.readUInt32BE(0) !== MAGIC || len > MAX_PAYLOAD) return null;
    const buf = Buffer.alloc(Math.min(size, HEADER + len));
    await fh.read(buf, 0, buf.length, 0);
    const r = parseAt(buf, 0);
    return r.kind === 'record' ? r.record.spooledAt : null;
  } finally { await fh.close(); }
}

export class Spool {
  private readonly sealed: Segment[] = [];
  private active: Segment | null = null;
  private pending: Pending[] = [];
  private reserved = 0; // bytes of appends accepted but not yet written
  private flushQueued = false;
  private fileOps: Promise<void> = Promise.resolve();
  private replays: Promise<unknown> = Promise.resolve();
  private closing: Promise<void> | null = null;
  private quarantined = 0;

  private constructor(private readonly dir: string, private readonly maxBytes: number, private readonly segmentBytes: number,
    private readonly log: Logger, private nextSeq: number) {}

  static async open(opts: SpoolOptions): Promise<Spool> {
    const dir = resolve(opts.dir);
    const log = opts.logger ?? silentLogger;
    if (openDirs.has(dir)) throw new StrataError('spool_locked', `spool ${dir} is already open in this process (pid ${process.pid})`);
    await mkdir(dir, { recursive: true });
    await acquireLock(dir, join(dir, 'spool.lock'), log);
    openDirs.add(dir);
    try {
      const names = (await readdir(dir)).filter((n) => SEGMENT.test(n)).sort();
      const quarantined = await readdir(join(dir, 'quarantine')).catch(() => [] as string[]);
      const seqs = [...names, ...quarantined].map((n) => Number(SEGMENT.exec(n)?.[1] ?? 0));
      const spool = new Spool(dir, opts.maxBytes, opts.segmentBytes ?? 16 * 1024 * 1024, log, Math.max(0, ...seqs) + 1);
      for (const name of names) {
        const path = join(dir, name);
        const { size } = await stat(path);
        spool.sealed.push({ seq: Number(SEGMENT.exec(name)?.[1]), name, path, size, firstSpooledAt: await firstSpooledAt(path, size) });
      }
      if (names.length) log.info('spool holds segments from a previous run', { dir, segments: names.length, bytes: spool.bytes });
      return spool;
    } catch (err) {
      openDirs.delete(dir);
      await rm(join(dir, 'spool.lock'), { force: true });
      throw err;
    }
  }

  private get closed(): boolean { return this.closing !== null; }
  private closedError() { return new StrataError('spool_closed', `spool ${this.dir} is closed`); }

  get bytes(): number { return this.sealed.reduce((n, s) => n + s.size, this.active?.size ?? 0); }
  get empty(): boolean { return this.bytes === 0; }
  get quarantinedSegments(): number { return this.quarantined; }
  get oldestSpooledAt(): number | null {
    for (const s of this.sealed) if (s.firstSpooledAt !== null) return s.firstSpooledAt;
    return this.active?.firstSpooledAt ?? null;
  }
  /** True when an append of `bytes` more would exceed maxBytes (appends not yet written count as used). */
  wouldOverflow(bytes: number): boolean { return this.bytes + this.reserved + bytes > this.maxBytes; }

  /** Resolves once the records are written and fsynced; nothing is written when it throws. */
  append(records: readonly SpoolRecord[]): Promise<void> {
    if (this.closed) return Promise.reject(this.closedError());
    if (!records.length) return Promise.resolve();
    let buf: Buffer;
    try { buf = encode(records); } catch (err) { return Promise.reject(err); }
    if (this.wouldOverflow(buf.length)) return Promise.reject(new SpoolFullError(this.dir, this.bytes + this.reserved, buf.length, this.maxBytes));
    this.reserved += buf.length;
    return new Promise<void>((resolve, reject) => {
      this.pending.push({ buf, first: records[0]!.spooledAt, resolve, reject });
      if (!this.flushQueued) { this.flushQueued = true; void this.fileOp(() => this.flush()); }
    });
  }

  /** Replays sealed segments in order; rethrows the first commit error. A second call waits for the running one. */
  replay(commit: (r: SpoolRecord) => Promise<void>): Promise<ReplayReport> {
    if (this.closed) return Promise.reject(this.closedError());
    const run = this.replays.then(() => this.replayOnce(commit));
    this.replays = run.catch(() => {});
    return run;
  }

  /** Waits for in-flight appends and the running replay (stopped after its current commit), then unlocks. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      await this.replays;
      await this.fileOp(async () => { await this.active?.fh?.close(); if (this.active) this.active.fh = undefined; });
      const lockPath = join(this.dir, 'spool.lock');
      if ((await readFile(lockPath, 'utf8').catch(() => '')).trim() === String(process.pid)) await rm(lockPath, { force: true });
      openDirs.delete(this.dir);
    })();
    return this.closing;
  }

  private fileOp<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.fileOps.then(fn);
    this.fileOps = run.then(() => {}, () => {});
    return run;
  }

  private async flush(): Promise<void> {
    this.flushQueued = false;
    const group = this.pending;
    this.pending = [];
    const buf = group.length === 1 ? group[0]!.buf : Buffer.concat(group.map((g) => g.buf));
    try {
      const seg = this.active ?? (this.active = await this.createSegment());
      for (let o = 0; o < buf.length;) o += (await seg.fh!.write(buf, o, buf.length - o)).bytesWritten;
      await seg.fh!.datasync();
      seg.size += buf.length;
      seg.firstSpooledAt ??= group[0]!.first;
      this.reserved -= buf.length;
      for (const g of group) g.resolve();
    } catch (err) {
      this.reserved -= buf.length;
      this.log.error('spool write failed; abandoning the active segment', { dir: this.dir, error: err });
      await this.abandonActive();
      const e = new StrataError('spool_write', `spool ${this.dir}: write failed: ${errorText(err)}`, { cause: err });
      for (const g of group) g.reject(e);
      return;
    }
    if (this.active && this.active.size >= this.segmentBytes) await this.sealActive();
  }

  private async createSegment(): Promise<Segment> {
    const seq = this.nextSeq++;
    const name = segName(seq);
    const path = join(this.dir, name);
    const fh = await open(path, 'ax');
    try { await fsyncDir(this.dir); } catch (err) { await fh.close(); await rm(path, { force: true }); throw err; }
    return { seq, name, path, size: 0, firstSpooledAt: null, fh };
  }

  /** Call inside fileOp. The active segment joins the sealed ones and is never written again. */
  private async sealActive(): Promise<void> {
    const seg = this.active;
    if (!seg) return;
    this.active = null;
    this.sealed.push(seg);
    await seg.fh?.close().catch((err: unknown) => this.log.warn('closing a sealed spool segment failed', { file: seg.path, error: err }));
    seg.fh = undefined;
  }

  /** After a failed write: cut the file back to its acknowledged bytes and seal it (or drop it when empty). */
  private async abandonActive(): Promise<void> {
    const seg = this.active;
    if (!seg) return;
    this.active = null;
    await seg.fh?.truncate(seg.size).catch(() => {}); // drop the partial write: later appends must not follow garbage
    await seg.fh?.close().catch(() => {});
    seg.fh = undefined;
    seg.size = await stat(seg.path).then((s) => s.size, () => seg.size);
    if (seg.size > 0) this.sealed.push(seg);
    else await rm(seg.path, { force: true }).catch(() => {});
  }

  private async replayOnce(commit: (r: SpoolRecord) => Promise<void>): Promise<ReplayReport> {
    const report: ReplayReport = { records: 0, segments: 0, quarantined: 0 };
    if (this.closed) return report;
    await this.fileOp(async () => { if (this.active && this.active.size > 0) await this.sealActive(); });
    for (const seg of [...this.sealed]) {
      const buf = await readFile(seg.path).catch((err: NodeJS.ErrnoException) => { if (err.code === 'ENOENT') return null; throw err; });
      if (!buf) {
        this.log.warn('a spool segment vanished before its replay', { file: seg.path });
        this.sealed.splice(this.sealed.indexOf(seg), 1);
        continue;
      }
      let off = 0;
      let committed = 0;
      let corrupt: string | null = null;
      while (off < buf.length && corrupt === null) {
        const r = parseAt(buf, off);
        if (r.kind === 'corrupt') corrupt = `${seg.name}: ${r.reason} at byte offset ${off}; the ${committed} records before it were committed\n`;
        else if (r.kind === 'torn') {
          this.log.warn('ignoring the torn tail of a spool segment (an unacknowledged append cut short)', { file: seg.path, offset: off, reason: r.reason });
          break;
        } else {
          if (this.closed) return report;
          await commit(r.record);
          committed++;
          report.records++;
          off = r.end;
        }
      }
      if (corrupt !== null) {
        await this.quarantine(seg, corrupt);
        report.quarantined++;
      } else {
        await rm(seg.path, { force: true });
        this.sealed.splice(this.sealed.indexOf(seg), 1);
        report.segments++;
      }
    }
    return report;
  }

  private async quarantine(seg: Segment, reason: string): Promise<void> {
    const qdir = join(this.dir, 'quarantine');
    await mkdir(qdir, { recursive: true });
    let target = join(qdir, seg.name);
    for (let i = 1; await stat(target).then(() => true, () => false); i++) target = join(qdir, `${seg.name}.${i}`);
    await rename(seg.path, target);
    await writeFile(`${target}.reason.txt`, reason);
    await fsyncDir(qdir).catch(() => {});
    this.sealed.splice(this.sealed.indexOf(seg), 1);
    this.quarantined++;
    this.log.error('quarantined a corrupt spool segment', { file: seg.path, quarantinedAs: target, reason: reason.trim() });
  }
}
