// While `strata dev` holds its embedded directory, no other process opens it: the commands that
// write are refused naming the holder, the read-only ones are answered by the running process, and
// every acknowledged row is still there once it stops. A lock left by a killed process is taken over.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { openPglite } from '../src/db/pglite.ts';
import { askHolder } from '../src/dev-socket.ts';
import { freePort } from './support/cluster.ts';
import { strataProcess } from './support/child.ts';

const bin = join(import.meta.dirname, '../bin/strata.js');

/** process.env without any STRATA_* setting of the machine running the tests. */
const baseEnv = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('STRATA_')));

const started: ChildProcess[] = [];
// A failed assertion leaves no strata dev running.
afterEach(() => {
  for (const c of started.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
});

function startDev(env: NodeJS.ProcessEnv): { child: ChildProcess; ready: Promise<string>; exit: Promise<string> } {
  const child = spawn(process.execPath, [bin, 'dev'], { env: { ...baseEnv, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  started.push(child);
  let out = '';
  let err = '';
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const exit = new Promise<string>((r) => child.once('exit', (code, signal) => r(code === 0 ? '0' : `code ${code}, signal ${signal}\n${err}`)));
  const ready = new Promise<string>((resolve, reject) => {
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('stop with Ctrl-C')) resolve(out);
    });
    void exit.then((code) => reject(new Error(`strata dev exited with ${code}\n${out}\n${err}`)));
  });
  return { child, ready, exit };
}

async function devEnv(dir: string): Promise<Record<string, string>> {
  return {
    STRATA_DEV_DIR: dir,
    STRATA_LISTEN: `127.0.0.1:${await freePort()}`,
    STRATA_LOG_LEVEL: 'warn',
    STRATA_BATCH_AGE_MS: '50',
    STRATA_WORKER_LISTEN: `127.0.0.1:${await freePort()}`,
    STRATA_DEV_S3_LISTEN: `127.0.0.1:${await freePort()}`,
  };
}

const ROWS = 20_000;
const T0 = 1_763_719_200;
const md5 = (s: string) => createHash('md5').update(s).digest('hex');
/** What the rows sent hold, as the database's md5 query below renders them. */
const expectedMd5 = md5(Array.from({ length: ROWS }, (_, i) => `${T0 + i}:${i}.5`).join(','));

describe('strata dev holds its embedded directory', () => {
  it('refuses every writing command from another process, answers the read-only ones, and loses no acknowledged row', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'strata-dev-lock-'));
    const pgdata = join(dir, 'pgdata');
    const env = await devEnv(dir);
    const dev = startDev(env);
    const out = await dev.ready;
    const pid = dev.child.pid!;
    const token = /Token (\S+)'/.exec(out)![1]!;
    const url = /urls = \["(.+)"\]/.exec(out)![1]!;

    // Rows acknowledged by the gateway (204 once committed).
    for (let start = 0; start < ROWS; start += 5_000) {
      const body = Array.from({ length: 5_000 }, (_, j) => `press,line=${(start + j) % 10} temp=${start + j}.5 ${T0 + start + j}`).join('\n');
      const res = await fetch(`${url}/api/v2/write?precision=s`, { method: 'POST', headers: { Authorization: `Token ${token}` }, body });
      expect(res.status).toBe(204);
    }

    const viaUrl = { ...baseEnv, STRATA_DEV_DIR: dir, STRATA_LOG_LEVEL: 'warn', STRATA_ADMIN_DATABASE_URL: `pglite:${pgdata}` };
    const otherDev = { ...baseEnv, ...(await devEnv(dir)) };
    const writers = await Promise.all([
      strataProcess(['facility', 'add', 'intruder', '--region', 'local'], viaUrl),
      strataProcess(['tier', 'run'], viaUrl),
      strataProcess(['archive', 'run'], viaUrl),
      strataProcess(['migrate'], viaUrl),
      strataProcess(['facility', 'grant', 'someone', 'demo'], viaUrl),
      strataProcess(['dev'], otherDev),
    ]);
    for (const w of writers) {
      expect(w.code, w.output).not.toBe(0);
      expect(w.output).toMatch(new RegExp(`embedded database at ${pgdata} is in use by pid ${pid} \\(strata dev\\), since \\d{4}-.*kill ${pid}`));
    }
    expect(writers.map((w) => w.output).join('')).not.toMatch(/ingest token|gateway: http/);
    // Sent straight to the command socket, a writing command is refused by strata dev itself.
    const said: string[] = [];
    const sneaky = await askHolder(pgdata, ['facility', 'add', 'sneaky', '--region', 'local'], {}, { out: (t) => said.push(t), err: (t) => said.push(t) });
    expect(sneaky).not.toBe(0);
    expect(said.join('\n')).toMatch(/strata facility add changes the database, so strata dev does not run it for another process/);

    // Read-only commands, named by URL or by the dev defaults (STRATA_DEV_DIR alone), are answered by the running process.
    const byDefaults = { ...baseEnv, STRATA_DEV_DIR: dir, STRATA_LOG_LEVEL: 'warn' };
    for (const e of [viaUrl, byDefaults]) {
      const [status, facilities, tierPlan, archiveList] = await Promise.all([
        strataProcess(['status'], e),
        strataProcess(['facility', 'list', '--json'], e),
        strataProcess(['tier', 'plan', '--json'], e),
        strataProcess(['archive', 'list'], e),
      ]);
      expect(status.code, status.output).toBe(0);
      expect(status.output).toContain(`database:     pglite:${pgdata}`);
      expect(status.output).toContain('facilities:   1, series: 10');
      expect(facilities.code, facilities.output).toBe(0);
      expect((JSON.parse(facilities.output) as { code: string; seriesCount: number }[]).map((f) => [f.code, f.seriesCount])).toEqual([['demo', 10]]);
      expect(tierPlan.code, tierPlan.output).toBe(0);
      expect((JSON.parse(tierPlan.output) as { chunks: unknown[] }).chunks.length).toBeGreaterThan(0);
      expect(archiveList.code, archiveList.output).toBe(0);
      expect(archiveList.output).toContain('0 archived chunks');
    }

    dev.child.kill('SIGTERM');
    expect(await dev.exit).toBe('0');
    expect(existsSync(`${pgdata}.lock`)).toBe(false);
    expect(existsSync(`${pgdata}.sock`)).toBe(false);

    const db = await openPglite(`pglite:${pgdata}`);
    try {
      const r = await db.query<{ n: number; md5: string }>(
        `SELECT count(*)::int AS n, md5(string_agg(extract(epoch FROM time)::bigint || ':' || value::text, ',' ORDER BY time)) AS md5 FROM strata.metrics`,
      );
      expect(r.rows[0]).toEqual({ n: ROWS, md5: expectedMd5 });
      expect((await db.query('SELECT code FROM strata.facilities ORDER BY code')).rows).toEqual([{ code: 'demo' }]);
    } finally {
      await db.close();
    }

    // A lock left by a killed strata dev (its pid gone) is taken over by the next one.
    const dead = spawnSync(process.execPath, ['-e', '']).pid!;
    writeFileSync(`${pgdata}.lock`, JSON.stringify({ pid: dead, command: 'strata dev', since: '2026-01-01T00:00:00.000Z', thread: 0, nonce: 'killed', socket: `${pgdata}.sock` }) + '\n');
    const next = startDev(env);
    await next.ready;
    expect(JSON.parse(readFileSync(`${pgdata}.lock`, 'utf8'))).toMatchObject({ pid: next.child.pid, command: 'strata dev', socket: `${pgdata}.sock` });
    const status = await strataProcess(['status'], byDefaults);
    expect(status.code, status.output).toBe(0);
    expect(status.output).toContain('facilities:   1, series: 10');
    next.child.kill('SIGTERM');
    expect(await next.exit).toBe('0');
    expect(existsSync(`${pgdata}.lock`)).toBe(false);
  }, 600_000);
});
