// Strata as an operator installs it: `npm pack` (which builds dist/), the tarball installed in an
// empty directory from the npm registry, and the installed `strata` run from there — help, version,
// size with its shipped figures, serve, worker, dev — on the built JavaScript (the package holds no
// TypeScript sources and tsx is not installed).
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDb } from '../src/db/open.ts';
import { freePort } from './support/cluster.ts';
import { cluster, createDatabase, type TestDatabase } from './support/databases.ts';
import { facility, plainSchema, tempDir } from './support/gateway.ts';
import { until } from './support/wait.ts';

const run = promisify(execFile);
const ROOT = join(import.meta.dirname, '..');
const VERSION = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;

let home = '';
let installed = '';
let strataBin = '';
let t: TestDatabase;
let token = '';
const running = new Set<ChildProcess>();

beforeAll(async () => {
  const work = tempDir('strata-pack-');
  // npm's cache already holds every dependency after `npm ci`; the registry is asked only for what it lacks.
  const packed = await run('npm', ['pack', '--silent', '--pack-destination', work], { cwd: ROOT, maxBuffer: 16 << 20 });
  const tarball = join(work, packed.stdout.trim().split('\n').at(-1)!);
  home = join(work, 'site');
  mkdirSync(home);
  writeFileSync(join(home, 'package.json'), JSON.stringify({ name: 'strata-site', private: true }));
  await run('npm', ['install', '--no-audit', '--no-fund', '--prefer-offline', tarball], { cwd: home, maxBuffer: 16 << 20 });
  installed = join(home, 'node_modules', 'strata');
  strataBin = join(home, 'node_modules', '.bin', 'strata');
  t = await createDatabase(cluster().adminUrl(), 'strata_pkg');
  const db = await openDb(t.url);
  try {
    await plainSchema(db);
    token = (await facility(db, 'foundry')).token;
  } finally {
    await db.close();
  }
}, 600_000);

afterAll(async () => {
  for (const c of running) c.kill('SIGKILL');
  await t?.drop();
});

/** `strata <args>` as installed: its output and exit status. */
async function strata(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number; out: string; err: string }> {
  try {
    const r = await run(strataBin, args, { cwd: home, env: { ...process.env, ...env } });
    return { code: 0, out: r.stdout, err: r.stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof e.code === 'number' ? e.code : -1, out: e.stdout ?? '', err: e.stderr ?? '' };
  }
}

/** A long-running installed command: resolves its output once `ready` matches, then stops it with SIGTERM. */
async function runUntil(args: string[], env: NodeJS.ProcessEnv, ready: RegExp, during: (out: string) => Promise<void>): Promise<{ code: number | null; out: string; err: string }> {
  const child = spawn(strataBin, args, { cwd: home, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  running.add(child);
  let out = '';
  let err = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const exit = new Promise<number | null>((resolve) => child.once('exit', (code) => (running.delete(child), resolve(code))));
  try {
    await until(`strata ${args[0]} to be ready`, () => ready.test(out) || child.exitCode !== null, 120_000);
    if (child.exitCode !== null) throw new Error(`strata ${args.join(' ')} exited with ${child.exitCode}:\n${out}\n${err}`);
    await during(out);
  } finally {
    child.kill('SIGTERM');
  }
  return { code: await exit, out, err };
}

describe('the installed package', () => {
  it('holds the build and no sources, without tsx, and answers --help, --version and a bad option', async () => {
    expect(existsSync(join(installed, 'dist', 'cli.js'))).toBe(true);
    expect(existsSync(join(installed, 'src'))).toBe(false);
    expect(existsSync(join(home, 'node_modules', 'tsx'))).toBe(false);
    const help = await strata(['--help']);
    expect(help).toMatchObject({ code: 0 });
    expect(help.out).toContain('usage: strata <command> [options]');
    expect(await strata(['--version'])).toMatchObject({ code: 0, out: `${VERSION}\n` });
    const bad = await strata(['serve', '--bogus']);
    expect(bad.code).toBe(64);
    expect(bad.err).toContain('--bogus');
  });

  it('sizes a region with the measured figures it ships', async () => {
    const r = await strata(['size', '--memory', '512GiB', '--rate', '500000', '--facilities', '50']);
    expect(r.code).toBe(0);
    expect(r.out).toContain('Region sizing for 500,000 metrics/s from 50 facilities');
    expect(r.out).toMatch(/bytes per row on disk +[\d.]+ +\(measured: bench\/results\/storage\.json, \d{4}-\d\d-\d\d\)/);
    expect(r.out).not.toContain('assumed');
  });

  it('serves the gateway: a write is committed, SIGTERM exits 0', async () => {
    const port = await freePort();
    const env = { STRATA_DATABASE_URL: t.url, STRATA_REGION: 'test-1', STRATA_LISTEN: `127.0.0.1:${port}`, STRATA_SPOOL_DIR: tempDir(), STRATA_GATEWAY_PROCESSES: '1', STRATA_BATCH_AGE_MS: '20' };
    const r = await runUntil(['serve'], env, /^strata serve: .*listening on http:\/\//m, async () => {
      const res = await fetch(`http://127.0.0.1:${port}/write`, { method: 'POST', headers: { Authorization: `Token ${token}` }, body: 'furnace,zone=1 temp=1210.5 1764000000000000000\n' });
      expect(res.status).toBe(204);
    });
    expect(r.code, r.err).toBe(0);
    const db = await openDb(t.url);
    try {
      expect((await db.query<{ n: number }>('SELECT count(*)::int AS n FROM strata.metrics')).rows[0]!.n).toBe(1);
    } finally {
      await db.close();
    }
  });

  it('runs the worker: it announces its schedule and metrics, and SIGTERM exits 0', async () => {
    const port = await freePort();
    const r = await runUntil(['worker'], { STRATA_ADMIN_DATABASE_URL: t.url, STRATA_WORKER_LISTEN: `127.0.0.1:${port}` }, /^strata worker: /m, async () => {
      expect((await fetch(`http://127.0.0.1:${port}/metrics`)).status).toBe(200);
    });
    expect(r.code, r.err).toBe(0);
    expect(r.out).toContain(`metrics on http://127.0.0.1:${port}/metrics`);
  });

  it('runs strata dev on the embedded database: the printed curl command is committed, SIGTERM exits 0', async () => {
    const dir = tempDir('strata-pkg-dev-');
    const env = { STRATA_DEV_DIR: dir, STRATA_LISTEN: `127.0.0.1:${await freePort()}`, STRATA_WORKER_LISTEN: `127.0.0.1:${await freePort()}`, STRATA_DEV_S3_LISTEN: `127.0.0.1:${await freePort()}`, STRATA_LOG_LEVEL: 'warn' };
    const r = await runUntil(['dev'], env, /stop with Ctrl-C/, async (out) => {
      const curl = /^\s*(curl .*-XPOST.*)$/m.exec(out)![1]!;
      expect((await promisify(execFile)('bash', ['-c', `${curl} -s -o /dev/null -w '%{http_code}'`])).stdout).toBe('204');
    });
    expect(r.code, r.err).toBe(0);
    expect(r.out).toContain('applied 10 migrations');
  });
});
