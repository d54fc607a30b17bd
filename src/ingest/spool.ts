// Disk spool of the ingest gateway: batches the database could not take are appended to segment
// files, fsynced, and only then acknowledged; replay() later feeds them to the database in order and
// deletes a segment only after every intact record in it committed.
//   <dir>/seg-<16-digit seq>.active.spool   the segment being appended to; renamed on seal to
//   <dir>/seg-<16-digit seq>.spool          a sealed segment (sequence order is replay order)
//   <dir>/spool.lock                        pid of the owning process
//   <dir>/quarantine/                       damaged bytes, each with <file>.reason.txt (spool-quarantine.ts)
// Record format and scanning: spool-format.ts. A damaged record costs only its own bytes: replay
// resynchronises on the next intact record, quarantines the damaged span, logs one line and counts
// it (metrics strata_ingest_spool_damaged_*). A torn tail (an incomplete last record or zero fill) is
// dropped only in a segment still named active after a crash, the one place an append can have been
// cut short before it was acknowledged; in a sealed segment the same bytes are damage.
// Concurrency: every write, fsync and seal of the active segment runs on one serial queue (fileOp);
// appends queued while a write+fsync is in flight are written and fsynced together by the next one
// (group commit). replay() seals the active segment through that queue and reads only sealed
// segments, which are never written again; appends during a replay go to a new segment. Replays run
// one at a time: a second call waits for the running one to settle, then runs itself. close() seals.
import { mkdir, open, readdir, readFile, rename, rm, stat, type FileHandle } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { StrataError, errorText } from '../errors.ts';
import { silentLogger, type Logger } from '../log.ts';
import type { IngestMetrics } from './metrics.ts';
import { HEADER, MAGIC, MAX_PAYLOAD, activeName, decodeAt, encodeRecords, scanSegment, sealedName, segmentName, seqPrefix, spanSummary } from './spool-format.ts';
import { acquireLock, releaseLock } from './spool-lock.ts';
import { QUARANTINE, fsyncDir, quarantineSpan, reasonText } from './spool-quarantine.ts';
import type { SpoolRecord } from './types.ts';

export { spoolBytes } from './spool-format.ts';

export type SpoolMetrics = Pick<IngestMetrics, 'spoolDamagedRecords' | 'spoolDamagedBytes' | 'spoolDamagedRows' | 'spoolTornTails'>;
export interface SpoolOptions {
  dir: string;
  maxBytes: number;
  segmentBytes?: number;
  logger?: Logger;
  /** Damage and torn-tail counters; also settable later with useMetrics(). */
  metrics?: SpoolMetrics;
}
/** records: committed; segments: replayed and deleted; quarantined: files written to quarantine/ (damaged spans). */
export interface ReplayReport { records: number; segments: number; quarantined: number }

export class SpoolFullError extends StrataError {
  constructor(dir: string, used: number, requested: number, limit: number) {
    super('spool_full', `spool ${dir} is full: ${used} bytes used + ${requested} requested exceeds the limit of ${limit} bytes`);
    this.name = 'SpoolFullError';
  }
}

interface Segment {
  seq: number; name: string; path: string; size: number; firstSpooledAt: number | null;
  /** Still named active when this process found it: the segment of a process that stopped without sealing it. */
  crashed: boolean;
  fh?: FileHandle;
}
interface Pending { buf: Buffer; first: number; resolve: () => void; reject: (err: unknown) => void }

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
    const r = decodeAt(buf, 0);
    return r.ok ? r.record.spooledAt : null;
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
  private metrics: SpoolMetrics | null = null;

  private constructor(private readonly dir: string, private readonly maxBytes: number, private readonly segmentBytes: number,
    private readonly log: Logger, private nextSeq: number) {}

  static async open(opts: SpoolOptions): Promise<Spool> {
    const dir = resolve(opts.dir);
    const log = opts.logger ?? silentLogger;
    await mkdir(dir, { recursive: true });
    await acquireLock(dir, log);
    try {
      const all = await readdir(dir);
      const found = all.flatMap((name) => { const s = segmentName(name); return s ? [{ name, ...s }] : []; }).sort((a, b) => a.seq - b.seq);
      const quarantined = await readdir(join(dir, QUARANTINE)).catch(() => [] as string[]);
      const seqs = [...all, ...quarantined].map(seqPrefix);
      const spool = new Spool(dir, opts.maxBytes, opts.segmentBytes ?? 16 * 1024 * 1024, log, Math.max(0, ...seqs) + 1);
      spool.metrics = opts.metrics ?? null;
      for (const { name, seq, active } of found) {
        const path = join(dir, name);
        const { size } = await stat(path);
        spool.sealed.push({ seq, name, path, size, firstSpooledAt: await firstSpooledAt(path, size), crashed: active });
      }
      if (found.length) log.info('spool holds segments from a previous run', { dir, segments: found.length, bytes: spool.bytes, unsealed: found.filter((f) => f.active).length });
      return spool;
    } catch (err) {
      await releaseLock(dir);
      throw err;
    }
  }

  /** Counts damage and torn tails found by later replays in `metrics`. */
  useMetrics(metrics: SpoolMetrics): void { this.metrics = metrics; }

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
    try { buf = encodeRecords(records); } catch (err) { return Promise.reject(err); }
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
      await this.fileOp(() => this.sealActive()); // a clean stop: the active segment is complete
      await releaseLock(this.dir);
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
    } catch (err) {
      this.reserved -= buf.length;
      this.log.error('spool write failed; abandoning the active segment', { dir: this.dir, error: err });
      await this.abandonActive();
      const e = new StrataError('spool_write', `spool ${this.dir}: write failed: ${errorText(err)}`, { cause: err });
      for (const g of group) g.reject(e);
      return;
    }
    // Sealed before the answer, so what a caller sees after an append is settled (sealActive never throws).
    if (this.active && this.active.size >= this.segmentBytes) await this.sealActive();
    for (const g of group) g.resolve();
  }

  private async createSegment(): Promise<Segment> {
    const seq = this.nextSeq++;
    const name = activeName(seq);
    const path = join(this.dir, name);
    const fh = await open(path, 'ax');
    try { await fsyncDir(this.dir); } catch (err) { await fh.close(); await rm(path, { force: true }); throw err; }
    return { seq, name, path, size: 0, firstSpooledAt: null, crashed: false, fh };
  }

  /** Call inside fileOp. The active segment joins the sealed ones, is renamed sealed and never written again. */
  private async sealActive(): Promise<void> {
    const seg = this.active;
    if (!seg) return;
    this.active = null;
    if (seg.size > 0) this.sealed.push(seg); // before any await: bytes and oldestSpooledAt keep counting it
    await seg.fh?.close().catch((err: unknown) => this.log.warn('closing a sealed spool segment failed', { file: seg.path, error: err }));
    seg.fh = undefined;
    if (seg.size > 0) await this.rename(seg, sealedName(seg.seq));
    else await rm(seg.path, { force: true }).catch(() => {});
  }

  /** Renames a sealed segment (every byte in it was fsynced, so a short tail after this is damage). */
  private async rename(seg: Segment, name: string): Promise<void> {
    const path = join(this.dir, name);
    try {
      await rename(seg.path, path);
      Object.assign(seg, { name, path });
      await fsyncDir(this.dir);
    } catch (err) {
      this.log.warn('renaming a sealed spool segment failed; it keeps its active name', { file: seg.path, error: err });
    }
  }

  /** After a failed write: cut the file back to its acknowledged bytes and seal it (or drop it when empty). */
  private async abandonActive(): Promise<void> {
    const seg = this.active;
    if (!seg) return;
    this.active = null;
    // Drop the partial write: later appends must not follow garbage. When that fails too, the bytes
    // past the acknowledged ones stay, and the segment keeps its active name (a torn tail may follow).
    const cut = await seg.fh?.truncate(seg.size).then(() => true, () => false);
    await seg.fh?.close().catch(() => {});
    seg.fh = undefined;
    seg.size = await stat(seg.path).then((s) => s.size, () => seg.size);
    if (seg.size === 0) { await rm(seg.path, { force: true }).catch(() => {}); return; }
    this.sealed.push(seg);
    if (cut) await this.rename(seg, sealedName(seg.seq));
    else seg.crashed = true;
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
      const scan = scanSegment(buf, { mayHaveTornTail: seg.crashed });
      for (const r of scan.records) {
        if (this.closed) return report;
        await commit(r.record);
        report.records++;
      }
      // Every intact record committed: only now keep the damage aside and let the segment go.
      if (scan.torn) {
        this.metrics?.spoolTornTails.inc();
        this.log.warn('dropped the torn tail of a segment a stopped process was appending to (an unacknowledged append cut short)',
          { file: seg.path, offset: scan.torn.start, bytes: scan.torn.end - scan.torn.start, reason: scan.torn.reason });
      }
      let moved = false;
      for (const span of scan.damage) {
        const state = seg.crashed ? 'unsealed segment of a stopped process' : 'sealed';
        const note = `the ${scan.records.length} intact records of the segment were replayed${scan.damage.length > 1 ? `; it had ${scan.damage.length} damaged spans` : ''}`;
        const target = await quarantineSpan(this.dir, seg.path, seg.name, buf, span, reasonText(seg.name, state, buf.length, span, note));
        moved ||= span.start === 0 && span.end === buf.length;
        this.quarantined++;
        report.quarantined++;
        this.metrics?.spoolDamagedRecords.inc(span.records);
        this.metrics?.spoolDamagedBytes.inc(span.end - span.start);
        this.metrics?.spoolDamagedRows.inc(span.rows);
        this.log.error('damaged spool bytes moved to quarantine; the intact records around them were replayed', {
          file: seg.path, quarantinedAs: target, start: span.start, end: span.end, bytes: span.end - span.start,
          records: span.records, rows: span.rows, rowsKnown: span.rowsKnown, reason: span.reason, summary: spanSummary(span),
        });
      }
      if (!moved) {
        await rm(seg.path, { force: true });
        report.segments++;
      }
      this.sealed.splice(this.sealed.indexOf(seg), 1);
    }
    return report;
  }
}
