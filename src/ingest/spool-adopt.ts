// The spool directories of `strata serve --processes N` (src/serve-processes.ts): process i spools in
// <spoolDir>/process-<i>; segments a run with another process count left elsewhere (the top level
// after a single-process run, process-<k> for k ≥ N after a larger one) are moved to where this run
// replays them, so none is stranded.
import { mkdir, readdir, rename } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from '../log.ts';
import { activeName, sealedName, segmentName, seqPrefix } from './spool-format.ts';
import { acquireLock, releaseLock } from './spool-lock.ts';
import { QUARANTINE, fsyncDir } from './spool-quarantine.ts';

export function processSpoolDir(spoolDir: string, index: number): string {
  return join(spoolDir, `process-${index}`);
}

/** The segment files of `dir`, in replay order. */
async function segments(dir: string): Promise<{ name: string; seq: number; active: boolean }[]> {
  const names = await readdir(dir).catch(() => [] as string[]);
  return names.flatMap((name) => {
    const s = segmentName(name);
    return s ? [{ name, ...s }] : [];
  }).sort((a, b) => a.seq - b.seq);
}

/**
 * Moves the segments of `from` into `to`, numbered after every sequence `to` has used (its own
 * segments and quarantine), each keeping its state (an `.active` segment is still one a process
 * stopped without sealing, so a torn tail is dropped on replay). The caller holds both locks.
 * A rename is atomic, so a crash leaves each segment in one of the two places, never lost or doubled.
 */
export async function moveSegments(from: string, to: string): Promise<number> {
  const found = await segments(from);
  if (!found.length) return 0;
  await mkdir(to, { recursive: true });
  const used = [...(await readdir(to)), ...(await readdir(join(to, QUARANTINE)).catch(() => [] as string[]))].map(seqPrefix);
  let seq = used.reduce((a, b) => Math.max(a, b), 0) + 1;
  for (const s of found) await rename(join(from, s.name), join(to, s.active ? activeName(seq++) : sealedName(seq++)));
  await fsyncDir(to);
  await fsyncDir(from);
  return found.length;
}

/**
 * Spool directories under `spoolDir` that `processes` processes would never open, and that hold
 * segments: the top level when there are several (a single-process run's), process-<k> for k ≥
 * `processes` (all of them for a single process).
 */
async function strandedDirs(spoolDir: string, processes: number): Promise<string[]> {
  const entries = await readdir(spoolDir, { withFileTypes: true }).catch(() => []);
  const others = entries
    .flatMap((e) => {
      const m = e.isDirectory() ? /^process-(\d+)$/.exec(e.name) : null;
      return m && (processes === 1 || Number(m[1]) >= processes) ? [{ dir: join(spoolDir, e.name), index: Number(m[1]) }] : [];
    })
    .sort((a, b) => a.index - b.index)
    .map((d) => d.dir);
  const candidates = processes === 1 ? others : [spoolDir, ...others];
  const out: string[] = [];
  for (const dir of candidates) if ((await segments(dir)).length) out.push(dir);
  return out;
}

/**
 * Moves stranded segments (strandedDirs) to where this run replays them: process-0, or the top
 * level for a single process. Each directory's lock is taken for the move (a live gateway on one
 * is an error: spool_locked), except the top level when `topHeld` (the primary holds it).
 */
export async function adoptStranded(spoolDir: string, processes: number, log: Logger, topHeld: boolean): Promise<void> {
  const sources = await strandedDirs(spoolDir, processes);
  if (!sources.length) return;
  const target = processes === 1 ? spoolDir : processSpoolDir(spoolDir, 0);
  const taken: string[] = [];
  const take = async (dir: string) => {
    if (dir === spoolDir && topHeld) return;
    await mkdir(dir, { recursive: true });
    await acquireLock(dir, log);
    taken.push(dir);
  };
  try {
    await take(target);
    for (const from of sources) {
      await take(from);
      const moved = await moveSegments(from, target);
      log.info(`moved ${moved} spool segment(s) left by a run with another process count to ${target}; they replay there`, { from, to: target, segments: moved });
    }
  } finally {
    for (const dir of taken.reverse()) await releaseLock(dir);
  }
}
