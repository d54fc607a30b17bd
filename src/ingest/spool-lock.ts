// One owner per spool dir: <dir>/spool.lock holds the owner's pid, created atomically (a temp file
// hard-linked into place); a lock whose pid is gone is taken over. openDirs catches a second open in
// the same process, which the pid alone cannot.
import { link, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { StrataError } from '../errors.ts';
import type { Logger } from '../log.ts';
import { fsyncDir } from './spool-quarantine.ts';

export const LOCK = 'spool.lock';
const openDirs = new Set<string>();

function isAlive(pid: number): boolean {
  try { process.kill(pid, 0); return true; } catch (err) { return (err as NodeJS.ErrnoException).code === 'EPERM'; } // EPERM: alive, another user's
}

/** The pid in `<dir>/spool.lock` and whether it runs, or null without a lock file. */
export async function lockHolder(dir: string): Promise<{ pid: number; alive: boolean; path: string } | null> {
  const path = join(dir, LOCK);
  const text = await readFile(path, 'utf8').catch(() => null);
  if (text === null) return null;
  const pid = Number(text.trim());
  const valid = Number.isInteger(pid) && pid > 0;
  return { pid: valid ? pid : 0, alive: valid && (pid === process.pid ? openDirs.has(dir) : isAlive(pid)), path };
}

/** Atomically create `<dir>/spool.lock` holding our pid; throws spool_locked when a live process holds it. */
export async function acquireLock(dir: string, log: Logger): Promise<void> {
  if (openDirs.has(dir)) throw new StrataError('spool_locked', `spool ${dir} is already open in this process (pid ${process.pid})`);
  const lockPath = join(dir, LOCK);
  const tmp = `${lockPath}.${process.pid}.tmp`;
  await writeFile(tmp, `${process.pid}\n`);
  try {
    for (let attempt = 0; ; attempt++) {
      try { await link(tmp, lockPath); await fsyncDir(dir); openDirs.add(dir); return; } catch (err) {
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

/** Removes the lock if it is still ours. */
export async function releaseLock(dir: string): Promise<void> {
  const lockPath = join(dir, LOCK);
  if ((await readFile(lockPath, 'utf8').catch(() => '')).trim() === String(process.pid)) await rm(lockPath, { force: true });
  openDirs.delete(dir);
}
