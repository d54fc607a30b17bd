// `strata spool inspect <dir>` and `strata spool replay <dir>`: what a spool dir holds (segments,
// quarantine, damage), and committing the intact records kept in its quarantine. Replay uses the
// writer's own transaction (ledger row + COPY, one per batch id), so a record already in the
// database is recognised by its batch id and not written twice.
import { readdir, readFile, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { requireSetting, type Config } from '../config.ts';
import { openDb } from '../db/open.ts';
import { StrataError, UsageError, errorText } from '../errors.ts';
import type { Logger } from '../log.ts';
import { classify } from './classify.ts';
import { IngestModeGate, logDecision } from './ingest-mode.ts';
import { createIngestMetrics } from './metrics.ts';
import { scanSegment, segmentName, spanSummary, type DamagedSpan, type ScannedRecord, type TornTail } from './spool-format.ts';
import { lockHolder } from './spool-lock.ts';
import { QUARANTINE, committedBefore, listQuarantine, quarantineSpan, reasonText, removeQuarantined, type QuarantineFile } from './spool-quarantine.ts';
import { Spool } from './spool.ts';
import { Writer } from './writer.ts';

const USAGE = 'usage: strata spool inspect <dir> [--records] [--json] | strata spool replay <dir> [--json]';

interface RecordInfo { offset: number; bytes: number; batchId: string; facilityId: number; rows: number; spooledAt: string }
interface SpanInfo { start: number; end: number; bytes: number; records: number; rows: number; rowsKnown: boolean; reason: string }
interface FileReport { name: string; bytes: number; records: RecordInfo[]; rows: number; damage: SpanInfo[] }
interface SegmentReport extends FileReport { state: 'sealed' | 'active' | 'unsealed'; tornTail: TornTail | null }
interface QuarantineReport extends FileReport {
  reason: string | null;
  /** Older releases' quarantined segments: records ending at or before this offset were committed then. */
  committedBefore: number | null;
  /** Intact records `strata spool replay` would commit, and their rows. */
  replayable: number;
  replayableRows: number;
}
type Lock = Awaited<ReturnType<typeof lockHolder>>;

const recordInfo = (r: ScannedRecord): RecordInfo => ({
  offset: r.offset, bytes: r.end - r.offset, batchId: r.record.batchId, facilityId: r.record.facilityId, rows: r.record.rowCount, spooledAt: new Date(r.record.spooledAt).toISOString(),
});
const spanInfo = (s: DamagedSpan): SpanInfo => ({ start: s.start, end: s.end, bytes: s.end - s.start, records: s.records, rows: s.rows, rowsKnown: s.rowsKnown, reason: s.reason });
const sum = <T>(xs: readonly T[], f: (x: T) => number) => xs.reduce((n, x) => n + f(x), 0);
const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? '' : 's'}`;

async function spoolDir(arg: string | undefined, sub: string): Promise<string> {
  if (!arg) throw new UsageError(`strata spool ${sub}: the spool directory is required (${USAGE})`);
  const dir = resolve(arg);
  const st = await stat(dir).catch(() => null);
  if (!st?.isDirectory()) throw new StrataError('spool_dir', `strata spool ${sub}: no spool directory at ${dir}`);
  return dir;
}

function lockText(lock: Lock): string {
  if (!lock) return 'not locked (no gateway is using it)';
  if (lock.alive) return `held by running process ${lock.pid} (${lock.path}); this is a live view: the active segment may still grow and replayed segments disappear`;
  return `lock file of process ${lock.pid || '(unreadable)'}, which is not running (${lock.path})`;
}

/** The intact records, damage and (for a segment left active) torn tail of every segment and quarantine file. */
async function inspect(dir: string): Promise<{ dir: string; lock: Lock; segments: SegmentReport[]; quarantine: QuarantineReport[] }> {
  const lock = await lockHolder(dir);
  const names = (await readdir(dir)).flatMap((name) => { const s = segmentName(name); return s ? [{ name, ...s }] : []; }).sort((a, b) => a.seq - b.seq);
  const segments: SegmentReport[] = [];
  for (const s of names) {
    const buf = await readFile(join(dir, s.name)).catch((err: NodeJS.ErrnoException) => { if (err.code === 'ENOENT') return null; throw err; });
    if (!buf) continue; // replayed by the running gateway meanwhile
    const scan = scanSegment(buf, { mayHaveTornTail: s.active });
    const records = scan.records.map(recordInfo);
    segments.push({
      name: s.name, state: !s.active ? 'sealed' : lock?.alive ? 'active' : 'unsealed', bytes: buf.length,
      records, rows: sum(records, (r) => r.rows), damage: scan.damage.map(spanInfo), tornTail: scan.torn,
    });
  }
  const quarantine: QuarantineReport[] = [];
  for (const q of await listQuarantine(dir)) {
    const buf = await readFile(q.path);
    const scan = scanSegment(buf, { mayHaveTornTail: false });
    const before = committedBefore(q.reason);
    const records = scan.records.map(recordInfo);
    const todo = records.filter((r) => before === null || r.offset + r.bytes > before);
    quarantine.push({
      name: q.name, bytes: buf.length, records, rows: sum(records, (r) => r.rows), damage: scan.damage.map(spanInfo),
      reason: q.reason, committedBefore: before, replayable: todo.length, replayableRows: sum(todo, (r) => r.rows),
    });
  }
  return { dir, lock, segments, quarantine };
}

function formatInspect(r: Awaited<ReturnType<typeof inspect>>, withRecords: boolean): string {
  const lines = [`spool ${r.dir}: ${lockText(r.lock)}`];
  const spanLine = (s: SpanInfo) => `    damaged ${spanSummary(s)}`;
  const recordLines = (f: FileReport) => withRecords ? f.records.map((x) => `    record @${x.offset}  ${x.bytes} bytes  batch ${x.batchId}  facility ${x.facilityId}  ${x.rows} rows  spooled ${x.spooledAt}`) : [];
  const damage = r.segments.flatMap((s) => s.damage);
  lines.push(`segments: ${r.segments.length}, ${plural(sum(r.segments, (s) => s.records.length), 'record')}, ${sum(r.segments, (s) => s.rows)} rows, ${sum(r.segments, (s) => s.bytes)} bytes; ` +
    (damage.length ? `damage: ${plural(damage.length, 'span')}, ${sum(damage, (d) => d.bytes)} bytes (quarantined when replayed)` : 'no damage'));
  for (const s of r.segments) {
    lines.push(`  ${s.name}  ${s.state}  ${plural(s.records.length, 'record')}  ${s.rows} rows  ${s.bytes} bytes`);
    lines.push(...recordLines(s), ...s.damage.map(spanLine));
    if (s.tornTail) lines.push(`    torn tail ${s.tornTail.start}-${s.tornTail.end} (${s.tornTail.end - s.tornTail.start} bytes): ${s.tornTail.reason}; an append cut short before it was acknowledged, dropped on replay`);
  }
  const todo = sum(r.quarantine, (q) => q.replayable);
  lines.push(`quarantine: ${plural(r.quarantine.length, 'file')}` + (r.quarantine.length ? `, ${plural(todo, 'intact record')} (${sum(r.quarantine, (q) => q.replayableRows)} rows) to replay with strata spool replay` : ''));
  for (const q of r.quarantine) {
    const before = q.committedBefore === null ? '' : `; ${q.records.length - q.replayable} before byte ${q.committedBefore} were committed before it was quarantined`;
    lines.push(`  ${QUARANTINE}/${q.name}  ${q.bytes} bytes  ${plural(q.records.length, 'intact record')} (${q.replayable} to replay, ${q.replayableRows} rows${before})`);
    lines.push(...recordLines(q), ...q.damage.map(spanLine));
    const why = q.reason?.split('\n').filter(Boolean) ?? [];
    lines.push(why.length ? `    reason: ${why.slice(0, 2).join(' | ')}` : '    reason: (no reason file)');
  }
  return lines.join('\n');
}

interface ReplayedFile {
  file: string; intact: number; committed: number; duplicates: number; skipped: number; rows: number;
  kept: string[]; removed: boolean; error?: string;
}

async function replayFile(dir: string, q: QuarantineFile, writer: Writer): Promise<ReplayedFile> {
  const buf = await readFile(q.path);
  const scan = scanSegment(buf, { mayHaveTornTail: false });
  const before = committedBefore(q.reason);
  const todo = scan.records.filter((r) => before === null || r.end > before);
  const result: ReplayedFile = { file: q.name, intact: scan.records.length, committed: 0, duplicates: 0, skipped: scan.records.length - todo.length, rows: 0, kept: [], removed: false };
  if (scan.records.length === 0) { result.kept.push(q.name); return result; }
  for (const r of todo) {
    const { batchId, facilityId, rowCount, rows } = r.record;
    try {
      const outcome = await writer.commit(batchId, facilityId, rowCount, [rows]);
      if (outcome === 'duplicate') result.duplicates++;
      else { result.committed++; result.rows += rowCount; }
    } catch (err) {
      const what = `${QUARANTINE}/${q.name}: batch ${batchId} (byte offset ${r.offset})`;
      if (classify(err) !== 'data') throw new StrataError('spool_replay', `strata spool replay: ${what}: ${errorText(err)}; nothing was removed (a rerun skips what committed, by batch id)`, { cause: err });
      result.error = `${what} refused by the database: ${errorText(err)}; the file is kept`;
      result.kept.push(q.name);
      return result;
    }
  }
  // Every intact record is in the database: keep only the damaged bytes, each span in its own file.
  const origin = q.reason?.split('\n').find(Boolean) ?? '(no reason file)';
  for (const span of scan.damage) {
    const note = `left by strata spool replay, which committed the ${scan.records.length} intact records of ${QUARANTINE}/${q.name} (${new Date().toISOString()}); its reason was: ${origin}`;
    const target = await quarantineSpan(dir, q.path, q.name, buf, span, reasonText(q.name, 'quarantined', buf.length, span, note));
    result.kept.push(target.slice(join(dir, QUARANTINE).length + 1));
  }
  await removeQuarantined(q);
  result.removed = true;
  return result;
}

async function replay(dir: string, config: Config, log: Logger): Promise<{ dir: string; files: ReplayedFile[] }> {
  const lock = await lockHolder(dir);
  if (lock?.alive) {
    throw new StrataError('spool_locked', `strata spool replay: ${dir} is held by running process ${lock.pid} (${lock.path}); stop that gateway first (this command moves files the gateway owns), or look with strata spool inspect`, { exitCode: 75 });
  }
  const files = await listQuarantine(dir);
  const withRecords: QuarantineFile[] = [];
  for (const q of files) if (scanSegment(await readFile(q.path), { mayHaveTornTail: false }).records.length) withRecords.push(q);
  if (!withRecords.length) return { dir, files: files.map((q) => ({ file: q.name, intact: 0, committed: 0, duplicates: 0, skipped: 0, rows: 0, kept: [q.name], removed: false })) };
  const url = requireSetting(config, 'databaseUrl', 'for strata spool replay (the database the quarantined batches go to)');
  // Opening the spool takes its lock: no gateway starts on the dir while this runs.
  const spool = await Spool.open({ dir, maxBytes: Number.MAX_SAFE_INTEGER, logger: log });
  try {
    const db = await openDb(url, { logger: log, max: 1, applicationName: 'strata-spool-replay' });
    try {
      const writer = new Writer(db, spool, createIngestMetrics({ defaults: false }), log, { maxAttempts: 1, attemptTimeoutMs: Math.max(30_000, config.writeTimeoutMs), concurrency: 1, mode: new IngestModeGate(db, config.ingestMode, logDecision(log)) }, String);
      const out: ReplayedFile[] = [];
      for (const q of files) {
        if (!withRecords.includes(q)) out.push({ file: q.name, intact: 0, committed: 0, duplicates: 0, skipped: 0, rows: 0, kept: [q.name], removed: false });
        else out.push(await replayFile(dir, q, writer));
      }
      return { dir, files: out };
    } finally {
      await db.close();
    }
  } finally {
    await spool.close();
  }
}

function formatReplay(r: Awaited<ReturnType<typeof replay>>): string {
  const lines = r.files.map((f) => {
    if (f.error) return `${QUARANTINE}/${f.file}: ${f.committed} committed, ${f.duplicates} already in the database before: ${f.error}`;
    if (!f.removed) return `${QUARANTINE}/${f.file}: no intact records; kept`;
    const skipped = f.skipped ? `, ${f.skipped} skipped (committed before it was quarantined)` : '';
    const kept = f.kept.length ? `; damaged bytes kept as ${f.kept.map((k) => `${QUARANTINE}/${k}`).join(', ')}` : '';
    return `${QUARANTINE}/${f.file}: committed ${plural(f.committed, 'record')} (${f.rows} rows), ${f.duplicates} already in the database${skipped}${kept}; removed`;
  });
  const committed = sum(r.files, (f) => f.committed);
  lines.push(r.files.length === 0 ? `nothing to replay: ${join(r.dir, QUARANTINE)} is empty`
    : `replayed ${plural(committed, 'record')} (${sum(r.files, (f) => f.rows)} rows) from ${plural(r.files.filter((f) => f.removed).length, 'file')}; ` +
      `${sum(r.files, (f) => f.duplicates)} already in the database; ${plural(sum(r.files, (f) => f.kept.length), 'file')} left in ${QUARANTINE}/`);
  return lines.join('\n');
}

export async function spoolCommand(args: string[], config: Config, log: Logger, out: (text: string) => void): Promise<number> {
  const [sub, ...rest] = args;
  if (sub === 'inspect') {
    const { values, positionals } = parseArgs({ args: rest, allowPositionals: true, options: { json: { type: 'boolean' }, records: { type: 'boolean' } } });
    if (positionals.length > 1) throw new UsageError(USAGE);
    const r = await inspect(await spoolDir(positionals[0], 'inspect'));
    out(values.json ? JSON.stringify(r, null, 2) : formatInspect(r, values.records === true));
    return 0;
  }
  if (sub === 'replay') {
    const { values, positionals } = parseArgs({ args: rest, allowPositionals: true, options: { json: { type: 'boolean' } } });
    if (positionals.length > 1) throw new UsageError(USAGE);
    const r = await replay(await spoolDir(positionals[0], 'replay'), config, log);
    out(values.json ? JSON.stringify(r, null, 2) : formatReplay(r));
    return r.files.some((f) => f.error) ? 1 : 0;
  }
  throw new UsageError(`strata spool: unknown subcommand ${sub ? `"${sub}"` : '(none)'}; use inspect or replay (${USAGE})`);
}
