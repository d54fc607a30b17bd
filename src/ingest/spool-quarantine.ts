// <spool>/quarantine/: damaged spool bytes kept for an operator, each with <file>.reason.txt.
//   <segment>                       a whole segment with no intact record in it (or, written by older
//                                   releases, a segment whose records from the damage on were never replayed)
//   <segment>.<start>-<end>.damaged the damaged bytes [start, end) of a segment whose other records replayed
// `strata spool inspect` reads them, `strata spool replay` commits whatever intact records they hold.
import { mkdir, open, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { spanSummary, type DamagedSpan } from './spool-format.ts';

export const QUARANTINE = 'quarantine';
export const REASON = '.reason.txt';

export async function fsyncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try { await fh.sync(); } finally { await fh.close(); }
}

/** The lines of a reason file for `span` of segment `segment` (`state`: sealed, crashed, ...). */
export function reasonText(segment: string, state: string, size: number, span: DamagedSpan, note: string): string {
  const headers = span.headers.map((h) =>
    `  batch ${h.batchId} facility ${h.facilityId} rows ${h.rowCount ?? 'unreadable'} spooled ${Number.isFinite(h.spooledAt) && Math.abs(h.spooledAt) < 8.64e15 ? new Date(h.spooledAt).toISOString() : 'unreadable'}`);
  return [
    `segment: ${segment} (${state}, ${size} bytes)`,
    `damaged: ${spanSummary(span)}`,
    `records: ${span.rowsKnown ? '' : 'at least '}${span.records}`,
    `rows: ${span.rowsKnown ? span.rows : span.rows > 0 ? `at least ${span.rows}` : 'unknown'} (estimated from the damaged records' headers, which fail their crc)`,
    ...(headers.length ? ['headers as read (unverified):', ...headers] : []),
    note,
    '',
  ].join('\n');
}

async function freeName(dir: string, name: string): Promise<string> {
  let target = join(dir, name);
  for (let i = 1; await stat(target).then(() => true, () => false); i++) target = join(dir, `${name}.${i}`);
  return target;
}

/**
 * Keeps `span` of the segment at `path` (contents `buf`) in quarantine with its reason; returns the
 * quarantine file. A span covering the whole file moves the file itself; the caller deletes the
 * segment otherwise. Rewriting the same span (after a crash before the segment was deleted) overwrites it.
 */
export async function quarantineSpan(spoolDir: string, path: string, name: string, buf: Buffer, span: DamagedSpan, reason: string): Promise<string> {
  const qdir = join(spoolDir, QUARANTINE);
  await mkdir(qdir, { recursive: true });
  let target: string;
  if (span.start === 0 && span.end === buf.length) {
    target = await freeName(qdir, name);
    await writeFile(`${target}${REASON}`, reason, { flush: true });
    await rename(path, target);
  } else {
    target = join(qdir, `${name}.${span.start}-${span.end}.damaged`);
    await writeFile(`${target}${REASON}`, reason, { flush: true });
    await writeFile(`${target}.tmp`, buf.subarray(span.start, span.end), { flush: true });
    await rename(`${target}.tmp`, target);
  }
  await fsyncDir(qdir).catch(() => {});
  return target;
}

export interface QuarantineFile { name: string; path: string; bytes: number; reason: string | null }

/** The data files in `<spoolDir>/quarantine/` (not their reason files), by name. */
export async function listQuarantine(spoolDir: string): Promise<QuarantineFile[]> {
  const qdir = join(spoolDir, QUARANTINE);
  const names = await readdir(qdir).catch((err: NodeJS.ErrnoException) => { if (err.code === 'ENOENT') return [] as string[]; throw err; });
  const out: QuarantineFile[] = [];
  for (const name of names.sort()) {
    if (name.endsWith(REASON) || name.endsWith('.tmp')) continue;
    const path = join(qdir, name);
    const st = await stat(path).catch(() => null);
    if (!st?.isFile()) continue;
    out.push({ name, path, bytes: st.size, reason: await readFile(`${path}${REASON}`, 'utf8').catch(() => null) });
  }
  return out;
}

/**
 * Where older releases said the records before the damage were committed ("... at byte offset N;
 * the K records before it were committed"): records ending at or before N need no replay.
 */
export function committedBefore(reason: string | null): number | null {
  const m = reason ? /at byte offset (\d+); the \d+ records before it were committed/.exec(reason) : null;
  return m ? Number(m[1]) : null;
}

export async function removeQuarantined(file: QuarantineFile): Promise<void> {
  await rm(file.path, { force: true }); // the data first: a reason file alone is ignored
  await rm(`${file.path}${REASON}`, { force: true });
}
