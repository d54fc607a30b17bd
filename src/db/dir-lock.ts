// One process at a time per embedded data directory. PGlite has no postmaster.pid of its own: two
// processes opening one directory each run their own Postgres over the same files, and acknowledged
// rows vanish or the directory stops opening. The lock is a file beside the directory
// (`<dir>.lock`, never inside it: initdb refuses a non-empty directory), holding who owns it.
//
// Taking it: the holder's record is written to a private temporary file and hard-linked to the
// lock path, so the lock appears atomically and complete, or not at all (EEXIST). A lock whose
// holder is dead (its pid gone, or reused by a process started later) is replaced by rename over
// it, only by the one taker that first claims that lock's generation (its nonce) with another
// exclusive link (`<dir>.lock.takeover-<nonce>`). A claim left by a taker that died is itself
// claimed the same way, one level down, so two takers never both replace a lock.
import { randomBytes } from 'node:crypto';
import { linkSync, readFileSync, realpathSync, renameSync, unlinkSync, writeFileSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { threadId } from 'node:worker_threads';
import { StrataError } from '../errors.ts';

export interface Holder {
  pid: number;
  /** The holder's command line (argv, without node's own path). */
  command: string;
  /** When the holder took the lock (ISO 8601). */
  since: string;
  /** Start time of the process (Linux /proc clock ticks), to tell a reused pid from the holder. */
  start?: string;
  thread: number;
  nonce: string;
  /** A local socket on which the holder answers read-only commands (see src/dev-socket.ts). */
  socket?: string;
}

export interface DirLock {
  readonly path: string;
  readonly holder: Holder;
  /** Records more about the holder (the command socket), atomically. */
  update(extra: Partial<Pick<Holder, 'socket'>>): void;
  /** Removes the lock if it is still ours. Idempotent. */
  release(): void;
}

/** Locks this process (this thread) holds, by lock path → nonce: released at exit, refused twice. */
const held = new Map<string, string>();
let exitHook = false;

/** The data directory a `pglite:` URL names, absolute; undefined for `pglite:memory`. */
export function pgliteDir(url: string): string | undefined {
  const spec = url.replace(/^pglite:(\/\/)?/, '');
  return spec === 'memory' ? undefined : resolve(spec);
}

/** `<dir>.lock` beside the directory, by its real path: two names of one directory share one lock. */
export function lockPathOf(dataDir: string): string {
  let real = dataDir;
  try {
    real = realpathSync(dataDir);
  } catch {
    /* not created yet */
  }
  return join(dirname(real), `${basename(real)}.lock`);
}

function processStart(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name (which may hold spaces and parentheses): state is field 3, starttime field 22.
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  } catch {
    return undefined;
  }
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Whether the holder of the lock (or claim) at `path` still runs: the same pid, started at the same time. */
export function holderAlive(h: Holder, path: string): boolean {
  if (h.pid === process.pid) {
    // Our own pid: a lock of this thread is alive if we hold it; another thread's we cannot judge, so alive.
    if (h.thread !== threadId) return true;
    return held.get(path) === h.nonce;
  }
  if (!pidAlive(h.pid)) return false;
  const start = processStart(h.pid);
  return !(h.start && start && start !== h.start);
}

/** The record in a lock (or claim) file; undefined if there is none; 'unreadable' if it is not a record. */
function readRecord(path: string): Holder | undefined | 'unreadable' {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  try {
    const h = JSON.parse(text) as Holder;
    return typeof h.pid === 'number' && typeof h.nonce === 'string' ? h : 'unreadable';
  } catch {
    return 'unreadable';
  }
}

/** The live holder of a data directory's lock, if any (for routing a command to it). */
export function liveHolder(dataDir: string): Holder | undefined {
  const r = readRecord(lockPathOf(dataDir));
  return r && r !== 'unreadable' && holderAlive(r, lockPathOf(dataDir)) ? r : undefined;
}

function describe(h: Holder): string {
  return `pid ${h.pid} (${h.command}), since ${h.since}`;
}

function tempPath(path: string, nonce: string, n: number): string {
  return `${path}.tmp-${process.pid}-${nonce}-${n}`;
}

let temps = 0;
function writeTemp(path: string, record: Holder): string {
  const tmp = tempPath(path, record.nonce, temps++);
  writeFileSync(tmp, JSON.stringify(record) + '\n', { mode: 0o644, flag: 'wx' });
  return tmp;
}

function tryLink(from: string, to: string): boolean {
  try {
    linkSync(from, to);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw err;
  }
}

function unlinkQuiet(path: string): void {
  try {
    unlinkSync(path);
  } catch {
    /* already gone */
  }
}

/**
 * Claims the right to replace the record at `base` of generation `nonce`: true if ours. A claim whose
 * claimer died is claimed in turn, one level down (`mine` collects the claims to remove once the
 * lock is replaced; never before, or a third taker could claim a level again). A live claimer wins.
 */
function claim(base: string, nonce: string, tmp: string, mine: string[]): boolean {
  for (;;) {
    const path = `${base}.takeover-${nonce}`;
    if (tryLink(tmp, path)) {
      mine.push(path);
      return true;
    }
    const c = readRecord(path);
    if (c === undefined) continue; // removed meanwhile: try again
    if (c === 'unreadable' || holderAlive(c, path)) return false;
    mine.push(path);
    nonce = c.nonce;
  }
}

/**
 * Takes the lock of an embedded data directory, or throws a StrataError naming the holder and what
 * to do. `command` describes this process for the next one that finds the lock.
 */
export function lockDataDir(dataDir: string, command = commandLine()): DirLock {
  const path = lockPathOf(dataDir);
  const start = processStart(process.pid);
  const record: Holder = { pid: process.pid, command, since: new Date().toISOString(), ...(start ? { start } : {}), thread: threadId, nonce: randomBytes(8).toString('hex') };
  const tmp = writeTemp(path, record);
  try {
    for (let attempt = 0; !tryLink(tmp, path); attempt++) {
      const h = readRecord(path);
      if (h === undefined) continue; // released meanwhile
      if (h === 'unreadable') {
        throw new StrataError('dir_locked', `the embedded database at ${dataDir} has a lock file ${path} that is not a lock record; if no strata process uses that directory, delete the file and try again`);
      }
      if (holderAlive(h, path)) throw lockedError(dataDir, h);
      // The holder is dead: replace its lock, if we are the one taker of this generation.
      const claims: string[] = [];
      if (!claim(path, h.nonce, tmp, claims)) {
        if (attempt > 500) throw new StrataError('dir_locked', `the embedded database at ${dataDir}: another process is taking over the stale lock ${path} and has not finished; try again`);
        sleep(10);
        continue;
      }
      try {
        const again = readRecord(path);
        if (again !== undefined && again !== 'unreadable' && again.nonce === h.nonce) {
          renameSync(writeTemp(path, record), path); // atomic: the lock file never disappears in between
          break;
        }
      } finally {
        for (const c of claims) unlinkQuiet(c);
      }
    }
  } finally {
    unlinkQuiet(tmp);
  }
  held.set(path, record.nonce);
  if (!exitHook) {
    exitHook = true;
    // A normal exit (process.exit included) leaves no lock behind; only a killed process leaves a stale one.
    process.on('exit', () => {
      for (const [p, nonce] of held) releaseIfOurs(p, nonce);
    });
  }
  let released = false;
  return {
    path,
    holder: record,
    update(extra) {
      if (released) return;
      Object.assign(record, extra);
      renameSync(writeTemp(path, record), path);
    },
    release() {
      if (released) return;
      released = true;
      held.delete(path);
      releaseIfOurs(path, record.nonce);
    },
  };
}

function releaseIfOurs(path: string, nonce: string): void {
  const r = readRecord(path);
  if (r && r !== 'unreadable' && r.nonce === nonce && r.pid === process.pid) unlinkQuiet(path);
}

export function lockedError(dataDir: string, h: Holder): StrataError {
  const served = h.socket
    ? `; while it runs, it answers the read-only commands (strata status, facility list, tier plan, archive plan, archive list) pointed at this directory`
    : '';
  return new StrataError(
    'dir_locked',
    `the embedded database at ${dataDir} is in use by ${describe(h)}: only one process may open it at a time. ` +
      `Stop that process first (Ctrl-C in its terminal, or kill ${h.pid})${served}.`,
  );
}

function commandLine(): string {
  const argv = process.argv.slice(1).map((a) => a.replace(/^.*\/bin\/strata\.js$/, 'strata'));
  return argv.join(' ') || 'node';
}

function sleep(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}
