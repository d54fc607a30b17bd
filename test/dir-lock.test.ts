// The lock on an embedded data directory: one opener at a time, in this process or another; a lock
// whose holder died is taken over by exactly one of the processes that find it.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { describe, expect, it } from 'vitest';
import { lockDataDir, lockPathOf, type Holder } from '../src/db/dir-lock.ts';
import { openPglite } from '../src/db/pglite.ts';
import { StrataError } from '../src/errors.ts';

/** A pid that no process has any more: a child that already exited. */
function deadPid(): number {
  const r = spawnSync(process.execPath, ['-e', '']);
  return r.pid!;
}

function staleRecord(pid: number, extra: Partial<Holder> = {}): string {
  return JSON.stringify({ pid, command: 'strata dev', since: '2026-01-01T00:00:00.000Z', thread: 0, nonce: `dead${pid}`, socket: '/nonexistent/strata.sock', ...extra } satisfies Holder) + '\n';
}

function readHolder(dataDir: string): Holder {
  return JSON.parse(readFileSync(lockPathOf(dataDir), 'utf8')) as Holder;
}

describe('embedded data directory lock', () => {
  it('refuses a second open of one directory in the same process, naming the holder; close() releases it', async () => {
    const dir = join(mkdtempSync(join(tmpdir(), 'strata-lock-')), 'pgdata');
    const db = await openPglite(`pglite:${dir}`);
    try {
      expect(readHolder(dir).pid).toBe(process.pid);
      const second = openPglite(`pglite:${dir}`);
      await expect(second).rejects.toBeInstanceOf(StrataError);
      await expect(second).rejects.toThrow(new RegExp(`in use by pid ${process.pid} \\(.*\\), since \\d{4}-\\d\\d-\\d\\dT.*Stop that process first`));
      await db.query('CREATE TABLE kept (v int)');
      await db.query('INSERT INTO kept VALUES (1), (2)');
    } finally {
      await db.close();
    }
    expect(existsSync(lockPathOf(dir))).toBe(false);
    const again = await openPglite(`pglite:${dir}`);
    try {
      expect((await again.query<{ n: number }>('SELECT count(*)::int AS n FROM kept')).rows[0]!.n).toBe(2);
    } finally {
      await again.close();
    }
    // Another name of the same directory is the same lock.
    const alias = `${dir}-alias`;
    symlinkSync(dir, alias);
    const held = lockDataDir(dir, 'holder');
    expect(() => lockDataDir(alias, 'alias')).toThrow(/in use by pid \d+ \(holder\)/);
    held.release();
    // pglite:memory has no directory to lock: two at once are fine.
    const [a, b] = [await openPglite('pglite:memory'), await openPglite('pglite:memory')];
    expect(a.lock).toBeUndefined();
    await a.close();
    await b.close();
  }, 120_000);

  it('takes over a lock whose holder is dead, or whose pid now belongs to a later process', () => {
    const dir = join(mkdtempSync(join(tmpdir(), 'strata-lock-stale-')), 'pgdata');
    mkdirSync(dir);
    writeFileSync(lockPathOf(dir), staleRecord(deadPid()));
    const lock = lockDataDir(dir, 'test');
    expect(readHolder(dir)).toMatchObject({ pid: process.pid, command: 'test' });
    expect(() => lockDataDir(dir, 'test again')).toThrow(new RegExp(`in use by pid ${process.pid} \\(test\\)`));
    lock.release();
    expect(existsSync(lockPathOf(dir))).toBe(false);

    // A live pid that started later than the holder recorded (pid reuse, as after a container restart).
    writeFileSync(lockPathOf(dir), staleRecord(process.ppid, { start: '1' }));
    const reused = lockDataDir(dir, 'test');
    expect(readHolder(dir).pid).toBe(process.pid);
    reused.release();
    // This very pid, but a lock this process does not hold: left by an earlier process with the same pid.
    writeFileSync(lockPathOf(dir), staleRecord(process.pid));
    lockDataDir(dir, 'test').release();
    // A live holder is never taken over.
    const start = readFileSync(`/proc/${process.ppid}/stat`, 'utf8').split(') ')[1]!.split(' ')[19]!;
    writeFileSync(lockPathOf(dir), staleRecord(process.ppid, { start }));
    expect(() => lockDataDir(dir, 'test')).toThrow(new RegExp(`in use by pid ${process.ppid} \\(strata dev\\), since 2026-01-01T00:00:00.000Z.*kill ${process.ppid}`));
    // An unreadable lock file is not guessed at.
    writeFileSync(lockPathOf(dir), '');
    expect(() => lockDataDir(dir, 'test')).toThrow(/not a lock record; if no strata process uses that directory, delete the file/);
  });

  it('lets exactly one of several processes take over a stale lock, even past a taker that died mid-takeover', async () => {
    const dir = join(mkdtempSync(join(tmpdir(), 'strata-lock-race-')), 'pgdata');
    mkdirSync(dir);
    const dead = deadPid();
    writeFileSync(lockPathOf(dir), staleRecord(dead));
    // A taker that died holding its claim on that stale lock.
    writeFileSync(`${lockPathOf(dir)}.takeover-dead${dead}`, staleRecord(deadPid(), { nonce: 'deadclaimer' }));
    const children: ChildProcess[] = [];
    try {
      const outcomes = await (async () => {
        const lines: Promise<string>[] = [];
        const readies: Promise<void>[] = [];
        for (let i = 0; i < 6; i++) {
          const child = spawn(process.execPath, ['--import', 'tsx', join(import.meta.dirname, 'support/lock-taker.ts'), dir], { stdio: ['pipe', 'pipe', 'inherit'] });
          children.push(child);
          const rl = createInterface({ input: child.stdout! });
          const it = rl[Symbol.asyncIterator]();
          readies.push(it.next().then((r) => expect(r.value).toBe('ready')));
          lines.push(readies[i]!.then(() => it.next()).then((r) => String(r.value)));
        }
        await Promise.all(readies);
        for (const c of children) c.stdin!.write('go\n');
        return Promise.all(lines);
      })();
      expect(outcomes.filter((o) => o === 'took')).toHaveLength(1);
      const winner = children[outcomes.indexOf('took')]!.pid!;
      expect(readHolder(dir).pid).toBe(winner);
      for (const o of outcomes.filter((x) => x !== 'took')) expect(o).toMatch(new RegExp(`^refused: .*in use by pid ${winner} \\(lock-taker ${winner}\\)`));
    } finally {
      for (const c of children) c.stdin!.end();
      await Promise.all(children.map((c) => (c.exitCode !== null ? undefined : new Promise((r) => c.once('exit', r)))));
    }
    // The winner exited normally: its lock is gone, and so are the claims.
    expect(existsSync(lockPathOf(dir))).toBe(false);
    expect(existsSync(`${lockPathOf(dir)}.takeover-dead${dead}`)).toBe(false);
  }, 120_000);
});
