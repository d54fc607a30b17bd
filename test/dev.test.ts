// `strata dev` as a user runs it: a child process that prints a curl example and a Telegraf snippet
// that work as printed, flushes pending rows on SIGTERM, exits 0, and reuses its directory.
import { exec, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { createServer } from 'node:net';
import { gzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { openPglite } from '../src/db/pglite.ts';
import { issue, makeCa } from './support/certificates.ts';
import { freePort } from './support/cluster.ts';

const bin = join(import.meta.dirname, '../bin/strata.js');

function startDev(env: NodeJS.ProcessEnv): { child: ChildProcess; output: () => string; ready: Promise<string>; exit: Promise<string> } {
  const child = spawn(process.execPath, [bin, 'dev'], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  // Resolves with the exit status, or with the signal and the logs when it did not exit by itself.
  const exit = new Promise<string>((r) => child.once('exit', (code, signal) => r(code === 0 ? '0' : `code ${code}, signal ${signal}\n${err}`)));
  const ready = new Promise<string>((resolve, reject) => {
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('stop with Ctrl-C')) resolve(out);
    });
    void exit.then((code) => reject(new Error(`strata dev exited with ${code}\n${out}\n${err}`)));
  });
  return { child, output: () => out, ready, exit };
}

describe('strata dev', () => {
  it('runs the gateway on an embedded TimescaleDB; the printed curl and Telegraf settings work; SIGTERM flushes and exits 0', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'strata-dev-'));
    const port = await freePort();
    // A long batch age: rows are still pending when SIGTERM arrives, so the flush on shutdown is what commits them.
    const env = { STRATA_DEV_DIR: dir, STRATA_LISTEN: `127.0.0.1:${port}`, STRATA_LOG_LEVEL: 'warn', STRATA_BATCH_AGE_MS: '60000', STRATA_WORKER_LISTEN: `127.0.0.1:${await freePort()}`, STRATA_DEV_S3_LISTEN: `127.0.0.1:${await freePort()}` };
    const first = startDev(env);
    const out = await first.ready;
    expect(out).toContain(`embedded TimescaleDB in ${dir}`);
    expect(out).toContain('applied 10 migrations');
    expect(out).toMatch(/timescaledb: +2\.\d+/);
    expect(out).toContain('tablespaces:  cold_data, warm_data');
    expect(out).toContain('facilities:   1, series: 0');

    const curl = /^\s*(curl .*)$/m.exec(out)![1]!;
    const curlDone = promisify(exec)(`${curl} -s -o /dev/null -w '%{http_code}'`);
    // The Telegraf snippet, sent the way outputs.influxdb_v2 sends it (gzip, Token auth, org and bucket).
    const url = /urls = \["(.+)"\]/.exec(out)![1]!;
    const token = /token = "(.+)"/.exec(out)![1]!;
    const telegraf = fetch(`${url}/api/v2/write?bucket=metrics&org=strata`, {
      method: 'POST',
      headers: { Authorization: `Token ${token}`, 'Content-Encoding': 'gzip', 'Content-Type': 'text/plain; charset=utf-8', 'User-Agent': 'Telegraf/1.32.0' },
      body: gzipSync('cpu,cpu=cpu-total,host=plc7 usage_idle=97.5,usage_user=1.25 1763719200000000000\n'),
    });
    await new Promise((r) => setTimeout(r, 500));
    first.child.kill('SIGTERM');
    expect((await curlDone).stdout).toBe('204');
    expect((await telegraf).status).toBe(204);
    expect(await first.exit).toBe('0');

    const db = await openPglite(`pglite:${join(dir, 'pgdata')}`);
    try {
      const r = await db.query<{ measurement: string; field: string; value: number }>(
        'SELECT s.measurement, s.field, m.value FROM strata.metrics m JOIN strata.series s ON s.id = m.series_id ORDER BY 1, 2',
      );
      expect(r.rows).toEqual([
        { measurement: 'cpu', field: 'usage_idle', value: 97.5 },
        { measurement: 'cpu', field: 'usage_user', value: 1.25 },
        { measurement: 'press', field: 'running', value: 1 },
        { measurement: 'press', field: 'temp', value: 71.5 },
      ]);
    } finally {
      await db.close();
    }

    // A restart reuses the database and token; the demo facility follows a changed region. With
    // TLS files the gateway speaks HTTPS and the printed curl and Telegraf settings trust its certificate.
    const ca = makeCa(dir, 'ca', 'Strata dev test CA');
    const cert = issue(dir, ca, 'gateway', 'localhost', 'DNS:localhost,IP:127.0.0.1');
    const second = startDev({ ...env, STRATA_BATCH_AGE_MS: '50', STRATA_REGION: 'eu-west-1', STRATA_TLS_CERT: cert.crt, STRATA_TLS_KEY: cert.key });
    const again = await second.ready;
    expect(again).toContain('schema up to date');
    expect(again).toContain(`Token ${token}`);
    expect(again).toContain(`urls = ["https://127.0.0.1:${port}"]`);
    expect(again).toContain(`tls_ca = "${cert.crt}"`);
    const tlsCurl = /^\s*(curl .*)$/m.exec(again)![1]!;
    expect(tlsCurl).toContain(`--cacert ${cert.crt}`);
    expect((await promisify(exec)(`${tlsCurl} -s -o /dev/null -w '%{http_code}'`)).stdout).toBe('204');
    second.child.kill('SIGINT');
    expect(await second.exit).toBe('0');
  }, 180_000);

  it('exits with the reason, and leaves nothing running, when its gateway port is taken', async () => {
    const taken = createServer();
    const port = await freePort();
    await new Promise<void>((r) => taken.listen(port, '127.0.0.1', () => r()));
    try {
      const dir = mkdtempSync(join(tmpdir(), 'strata-dev-taken-'));
      const dev = startDev({ STRATA_DEV_DIR: dir, STRATA_LISTEN: `127.0.0.1:${port}`, STRATA_LOG_LEVEL: 'warn', STRATA_WORKER_LISTEN: `127.0.0.1:${await freePort()}`, STRATA_DEV_S3_LISTEN: `127.0.0.1:${await freePort()}` });
      dev.ready.catch(() => {}); // it never gets ready
      // The worker and the local S3 server were started before the gateway: had they been left open, the process would not exit.
      const exit = await dev.exit;
      expect(exit).toMatch(/^code [1-9]\d*, signal null/);
      expect(exit).toMatch(new RegExp(`127\\.0\\.0\\.1:${port}`));
      expect(exit).toMatch(/EADDRINUSE|in use/);
    } finally {
      taken.close();
    }
  }, 60_000);

  it('tiers and archives old rows into its local S3 on schedule; the archive commands then list and restore them on one machine', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'strata-dev-archive-'));
    const port = await freePort();
    const env = { STRATA_DEV_DIR: dir, STRATA_LISTEN: `127.0.0.1:${port}`, STRATA_LOG_LEVEL: 'warn', STRATA_BATCH_AGE_MS: '50', STRATA_TIER_SCHEDULE: '*/2 * * * * *', STRATA_WORKER_LISTEN: `127.0.0.1:${await freePort()}`, STRATA_DEV_S3_LISTEN: `127.0.0.1:${await freePort()}` };
    const dev = startDev(env);
    const out = await dev.ready;
    expect(out).toMatch(/local S3: http:\/\/127\.0\.0\.1:\d+ \(bucket strata-archive-local, files in .*\/s3\)/);
    const token = /Token (\S+)'/.exec(out)![1]!;
    const twoYearsAgo = Math.floor(Date.now() / 1000) - 2 * 365 * 86_400;
    const lines = [0, 60, 120].map((s, i) => `press,line=9 temp=${60 + i} ${twoYearsAgo + s}`).join('\n') + `\npress,line=9 temp=75 ${Math.floor(Date.now() / 1000)}`;
    expect((await fetch(`http://127.0.0.1:${port}/api/v2/write?precision=s`, { method: 'POST', headers: { Authorization: `Token ${token}` }, body: lines })).status).toBe(204);
    const metrics = /metrics: (http:\/\/\S+\/metrics)/.exec(out)![1]!;
    let text = '';
    for (let i = 0; i < 150 && !/strata_archive_chunks_total 1/.test(text); i++) {
      await new Promise((r) => setTimeout(r, 200));
      text = await (await fetch(metrics)).text();
    }
    expect(text).toMatch(/strata_archive_chunks_total 1/);
    dev.child.kill('SIGTERM');
    expect(await dev.exit).toBe('0');

    const cli = (args: string[]) => promisify(exec)(`${process.execPath} ${bin} ${args.join(' ')}`, { env: { ...process.env, STRATA_ADMIN_DATABASE_URL: `pglite:${join(dir, 'pgdata')}`, STRATA_LOG_LEVEL: 'error' } });
    const list = await cli(['archive', 'list']);
    expect(list.stdout).toMatch(/ dropped +GLACIER +3 rows .* s3:\/\/strata-archive-local\/strata\/local\/strata\.metrics\/\d{4}\/\d\d\/\S+\.tar\.gz +retained until \d{4}/);
    const from = new Date((twoYearsAgo - 86_400) * 1000).toISOString();
    const to = new Date((twoYearsAgo + 86_400) * 1000).toISOString();
    const restored = await cli(['archive', 'restore', '--from', from, '--to', to, '--into', 'public.restored']);
    expect(restored.stdout).toMatch(/^1 archived chunks overlap the range; 1 loaded \(3 rows into public\.restored\)/);
    const db = await openPglite(`pglite:${join(dir, 'pgdata')}`);
    try {
      expect((await db.query('SELECT value FROM public.restored ORDER BY time')).rows).toEqual([{ value: 60 }, { value: 61 }, { value: 62 }]);
      expect((await db.query<{ n: number }>('SELECT count(*)::int AS n FROM strata.metrics')).rows[0]!.n).toBe(1);
    } finally {
      await db.close();
    }
  }, 180_000);
});
