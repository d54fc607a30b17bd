// `strata serve --processes 2` run the way an operator runs it (the CLI as a child process) on a
// database of the global native cluster, through PgBouncer (or a fault proxy in front of it):
// concurrent collectors served by both processes with /metrics summed over them, kill -9 of one
// process mid-stream (its replacement takes over its spool and replays it), SIGTERM to the primary,
// segments stranded by a run with another process count, a crash loop's backoff, a failed start.
import { spawn, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDb } from '../../src/db/open.ts';
import type { Db } from '../../src/db/port.ts';
import { strata } from '../support/child.ts';
import { freePort } from '../support/cluster.ts';
import { cluster, createDatabase, type TestDatabase } from '../support/databases.ts';
import { METRICS_AUTH, METRICS_TOKEN, facility, plainSchema, post, tempDir } from '../support/gateway.ts';
import { PgProxy } from '../support/pg-proxy.ts';
import { sleep, until } from '../support/wait.ts';

const BIN = join(import.meta.dirname, '../../bin/strata.js');
const LINES = 50;

let t: TestDatabase;
let admin: Db;
const facilities: { code: string; token: string }[] = [];
const running = new Set<ChildProcess>();

beforeAll(async () => {
  t = await createDatabase(cluster().adminUrl(), 'strata_procs');
  admin = await openDb(t.url, { max: 2 });
  await plainSchema(admin);
  for (const code of ['weir', 'sluice', 'dam']) facilities.push({ code, token: (await facility(admin, code)).token });
});

afterAll(async () => {
  for (const child of running) child.kill('SIGKILL');
  await admin?.close().catch(() => {});
  await t?.drop().catch(() => {});
});

interface LogLine {
  msg: string;
  level: string;
  process?: number;
  pid?: number | string;
  [k: string]: unknown;
}

/** A `strata serve` child: its stdout, its JSON log lines, and the pid of each process index. */
class Serve {
  readonly child: ChildProcess;
  readonly exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  out = '';
  err = '';

  constructor(
    readonly base: string,
    readonly spoolDir: string,
    env: NodeJS.ProcessEnv,
    args: string[],
  ) {
    this.child = spawn(process.execPath, [BIN, 'serve', ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    running.add(this.child);
    this.child.stdout!.on('data', (d: Buffer) => (this.out += d.toString()));
    this.child.stderr!.on('data', (d: Buffer) => (this.err += d.toString()));
    this.exit = new Promise((resolve) => this.child.once('exit', (code, signal) => (running.delete(this.child), resolve({ code, signal }))));
  }

  static async start(o: { dbUrl: string; processes?: string; spoolDir?: string; env?: NodeJS.ProcessEnv }): Promise<Serve> {
    const port = await freePort();
    const env = {
      ...process.env,
      STRATA_DATABASE_URL: o.dbUrl,
      STRATA_REGION: 'test-1',
      STRATA_METRICS_TOKEN: METRICS_TOKEN,
      STRATA_LISTEN: `127.0.0.1:${port}`,
      STRATA_BATCH_AGE_MS: '20',
      STRATA_WRITERS: '2',
      STRATA_LOG_LEVEL: 'info',
      ...o.env,
    };
    const spoolDir = o.spoolDir ?? tempDir();
    return new Serve(`http://127.0.0.1:${port}`, spoolDir, { ...env, STRATA_SPOOL_DIR: spoolDir }, ['--processes', o.processes ?? '2']);
  }

  logs(): LogLine[] {
    return this.err.split('\n').flatMap((l) => {
      try {
        const v = JSON.parse(l) as LogLine;
        return typeof v === 'object' && v && typeof v.msg === 'string' ? [v] : [];
      } catch {
        return [];
      }
    });
  }

  /** The announcement line, once every process listens. */
  async announced(): Promise<string> {
    await until('strata serve to announce itself', () => /^strata serve: .*$/m.test(this.out) || this.child.exitCode !== null, 120_000).catch((err) => {
      throw new Error(`${(err as Error).message}\n${this.err}`);
    });
    const line = /^strata serve: .*$/m.exec(this.out)?.[0];
    if (!line) throw new Error(`strata serve exited (${this.child.exitCode}) without announcing itself:\n${this.err}`);
    return line;
  }

  /** Pids the primary started for process `index`, in order. */
  pidsOf(index: number): number[] {
    return this.logs().flatMap((l) => (new RegExp(`^gateway process ${index} started \\(pid \\d+\\)$`).test(l.msg) ? [Number(l.pid)] : []));
  }

  listening(index: number, pid: number): boolean {
    return this.logs().some((l) => l.msg === `gateway process ${index} listening (pid ${pid})`);
  }

  async stop(): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGTERM');
    return this.exit;
  }
}

interface Req {
  facility: string;
  n: number;
}

function body(run: string, n: number): string {
  return Array.from({ length: LINES }, (_, i) => `proc,run=${run},series=s${i % 5} v=${n * 1000 + i} ${1_700_000_000_000 + n * 1000 + i}`).join('\n');
}

/** One collector: requests numbered from `first`, until `count` are sent or `more()` says stop; no retries (a retry is a new batch). */
async function collector(base: string, run: string, f: { code: string; token: string }, first: number, o: { count?: number; more?: () => boolean; pauseMs?: number }) {
  const acked: Req[] = [];
  const failed: { req: Req; why: string }[] = [];
  for (let i = 0; o.count === undefined ? o.more!() : i < o.count; i++) {
    const req = { facility: f.code, n: first + i };
    try {
      const r = await post(base, '/api/v2/write?precision=ms', body(run, req.n), { Authorization: `Token ${f.token}` });
      if (r.status === 204) acked.push(req);
      else failed.push({ req, why: `${r.status} ${JSON.stringify(r.body)}` });
    } catch (err) {
      failed.push({ req, why: String((err as Error).cause ?? err) });
    }
    if (o.pauseMs) await sleep(o.pauseMs);
  }
  return { acked, failed };
}

/** Every acknowledged row exactly once per facility and series; no row twice; with `exact`, nothing else. */
async function expectExactlyOnce(run: string, acked: Req[], exact = false): Promise<void> {
  const r = await admin.query<{ code: string; series: string; v: number; n: number }>(
    `SELECT f.code, s.tags->>'series' AS series, m.value AS v, count(*)::int AS n
       FROM strata.metrics m JOIN strata.series s ON s.id = m.series_id AND s.facility_id = m.facility_id
       JOIN strata.facilities f ON f.id = m.facility_id
      WHERE s.measurement = 'proc' AND s.tags->>'run' = $1 GROUP BY 1, 2, 3`,
    [run],
  );
  expect(r.rows.filter((x) => x.n !== 1)).toEqual([]);
  const stored = new Set(r.rows.map((x) => `${x.code}/${x.series}/${x.v}`));
  const expected = acked.flatMap((q) => Array.from({ length: LINES }, (_, i) => `${q.facility}/s${i % 5}/${q.n * 1000 + i}`));
  expect(expected.filter((k) => !stored.has(k))).toEqual([]);
  if (exact) expect(stored.size).toBe(expected.length);
}

/** A request on a new connection (the primary hands connections to the processes in turn; a collector's keep-alive one stays with its process). */
function fresh(base: string, path: string, o: { method?: string; body?: string; headers?: Record<string, string> } = {}): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(`${base}${path}`, { agent: false, method: o.method ?? 'GET', headers: o.headers }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (text += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
    });
    req.on('error', reject);
    req.end(o.body);
  });
}

async function scrape(base: string): Promise<string> {
  const r = await fresh(base, '/metrics', { headers: METRICS_AUTH });
  if (r.status !== 200) throw new Error(`/metrics answered ${r.status}: ${r.text}`);
  return r.text;
}

function samples(text: string, name: string): { labels: Record<string, string>; value: number }[] {
  return [...text.matchAll(new RegExp(`^${name}(?:\\{([^}]*)\\})? (\\S+)$`, 'gm'))].map((m) => ({
    labels: Object.fromEntries([...(m[1] ?? '').matchAll(/(\w+)="([^"]*)"/g)].map((l) => [l[1]!, l[2]!])),
    value: Number(m[2]),
  }));
}

const total = (text: string, name: string, where: Record<string, string> = {}) =>
  samples(text, name)
    .filter((s) => Object.entries(where).every(([k, v]) => s.labels[k] === v))
    .reduce((n, s) => n + s.value, 0);

/** Bytes of spool segments directly in `dir`. */
function segmentBytes(dir: string): number {
  try {
    return readdirSync(dir)
      .filter((f) => /^seg-\d{16}(\.active)?\.spool$/.test(f))
      .reduce((n, f) => n + statSync(join(dir, f)).size, 0);
  } catch {
    return 0;
  }
}

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

describe('strata serve --processes', () => {
  it('serves concurrent collectors of several facilities from both processes; every row once; /metrics sums the processes', async () => {
    const s = await Serve.start({ dbUrl: cluster().bouncerUrl(t.name) });
    try {
      const line = await s.announced();
      expect(line).toMatch(/^strata serve: region test-1, listening on http:\/\/127\.0\.0\.1:\d+, writing to \S+ \(2 gateway processes, pids \d+ \d+\)$/);
      const pids = /pids (\d+) (\d+)\)$/.exec(line)!.slice(1).map(Number);
      expect(new Set(pids).size).toBe(2);
      expect([s.pidsOf(0), s.pidsOf(1)]).toEqual([[pids[0]], [pids[1]]]);

      const results = await Promise.all(facilities.flatMap((f, fi) => [0, 1].map((k) => collector(s.base, 'one', f, (fi * 2 + k) * 1_000, { count: 12 }))));
      expect(results.flatMap((r) => r.failed)).toEqual([]);
      const acked = results.flatMap((r) => r.acked);
      expect(acked).toHaveLength(facilities.length * 2 * 12);
      await expectExactlyOnce('one', acked, true);

      // Four scrapes on new connections: round-robin hands them to both processes; each answers the sum.
      const rows = acked.length * LINES;
      for (let i = 0; i < 4; i++) {
        const text = await scrape(s.base);
        expect(total(text, 'strata_ingest_rows_received_total')).toBe(rows);
        for (const f of facilities) expect(total(text, 'strata_ingest_rows_committed_total', { facility: f.code })).toBe(rows / facilities.length);
        expect(samples(text, 'strata_gateway_process_info').map((x) => Number(x.labels.pid)).sort()).toEqual([...pids].sort());
        expect(total(text, 'strata_gateway_processes')).toBe(2);
      }
      const text = await scrape(s.base);
      const perProcess = [0, 1].map((p) => total(text, 'strata_gateway_process_rows_received_total', { process: String(p) }));
      // Both processes took writes, neither all of them, and the aggregate is their sum.
      expect(perProcess.every((r) => r > 0 && r < rows)).toBe(true);
      expect(perProcess[0]! + perProcess[1]!).toBe(rows);
      expect([0, 1].map((p) => total(text, 'strata_gateway_process_requests_total', { process: String(p), endpoint: 'metrics' }) > 0)).toEqual([true, true]);
      expect(total(text, 'strata_ingest_requests_total', { endpoint: 'write_v2', status: '204' })).toBe(acked.length);
    } finally {
      expect(await s.stop()).toEqual({ code: 0, signal: null });
    }
  }, 240_000);

  it('kill -9 of one process mid-stream: its replacement takes over its spool lock and replays it; acked rows exactly once', async () => {
    const proxy = await PgProxy.start(cluster().bouncerPort);
    const s = await Serve.start({ dbUrl: proxy.url(t.name), env: { STRATA_WRITE_ATTEMPTS: '2', STRATA_WRITE_TIMEOUT_MS: '1000' } });
    let streaming = true;
    let runs: Promise<{ acked: Req[]; failed: unknown[] }[]> = Promise.resolve([]);
    try {
      await s.announced();
      const [victim] = s.pidsOf(1);
      runs = Promise.all(facilities.slice(0, 2).flatMap((f, fi) => [0, 1].map((k) => collector(s.base, 'kill', f, (fi * 2 + k) * 10_000, { more: () => streaming, pauseMs: 20 }))));
      await until('rows to be committed', async () => total(await scrape(s.base), 'strata_ingest_rows_committed_total') >= 20 * LINES, 60_000);
      proxy.setDown(true);
      const victimDir = join(s.spoolDir, 'process-1');
      await until('process 1 to spool acknowledged rows', () => segmentBytes(victimDir) > 0, 90_000);
      process.kill(victim!, 'SIGKILL');

      await until('a replacement of process 1 to listen', () => s.pidsOf(1).length === 2 && s.listening(1, s.pidsOf(1)[1]!), 90_000);
      const replacement = s.pidsOf(1)[1]!;
      expect(replacement).not.toBe(victim);
      const logs = s.logs();
      expect(logs.find((l) => l.process === 1 && l.signal === 'SIGKILL')).toMatchObject({
        level: 'error',
        msg: `gateway process 1 (pid ${victim}) died (signal SIGKILL); starting a replacement in 1 s (it replays process 1's spool)`,
        pid: victim,
      });
      // The dead process's pid-based lock was taken over, and the replacement found its segments.
      expect(logs.some((l) => l.msg === 'taking over the lock of a spool whose owner is gone' && l.dir === victimDir && l.pid === String(victim))).toBe(true);
      expect(readFileSync(join(victimDir, 'spool.lock'), 'utf8').trim()).toBe(String(replacement));
      expect(logs.some((l) => l.msg === 'spool holds segments from a previous run' && l.dir === victimDir && l.process === 1)).toBe(true);

      proxy.setDown(false);
      // The replacement takes writes on new connections once the database is back (its catalog loads then).
      const extra: Req[] = [];
      let n = 90_000;
      await until('the replacement to take writes', async () => {
        // Two writes, then the scrape: connections go to the processes in turn, so writes reach both.
        for (let i = 0; i < 2; i++) {
          const req = { facility: facilities[0]!.code, n: n++ };
          const r = await fresh(s.base, '/api/v2/write?precision=ms', { method: 'POST', body: body('kill', req.n), headers: { Authorization: `Token ${facilities[0]!.token}` } });
          if (r.status === 204) extra.push(req);
        }
        return total(await scrape(s.base), 'strata_gateway_process_rows_received_total', { process: '1' }) > 0;
      }, 90_000);
      streaming = false;
      const results = [...(await runs), { acked: extra, failed: [] }];
      await until('both spools to be replayed', () => segmentBytes(victimDir) === 0 && segmentBytes(join(s.spoolDir, 'process-0')) === 0, 120_000);
      expect(s.logs().some((l) => l.msg === 'spool replayed' && l.process === 1 && l.pid === replacement && Number(l.records) > 0)).toBe(true);
      const acked = results.flatMap((r) => r.acked);
      expect(acked.length).toBeGreaterThan(20);
      await expectExactlyOnce('kill', acked);
    } finally {
      streaming = false;
      await runs.catch(() => {});
      proxy.setDown(false);
      expect(await s.stop()).toEqual({ code: 0, signal: null });
      await proxy.close();
    }
  }, 400_000);

  it('SIGTERM to the primary: every process flushes and exits, then the primary exits 0; every acked row is committed', async () => {
    // Batches wait up to 1 s, so rows are pending in the batchers when the signal arrives.
    const s = await Serve.start({ dbUrl: cluster().bouncerUrl(t.name), env: { STRATA_BATCH_AGE_MS: '1000' } });
    let streaming = true;
    const line = await s.announced();
    const pids = /pids (\d+) (\d+)\)$/.exec(line)!.slice(1).map(Number);
    const runs = facilities.flatMap((f, fi) => [0, 1].map((k) => collector(s.base, 'term', f, (fi * 2 + k) * 10_000, { more: () => streaming, pauseMs: 5 })));
    await until('requests in flight to both processes', async () => {
      const text = await scrape(s.base);
      return [0, 1].every((p) => total(text, 'strata_gateway_process_rows_received_total', { process: String(p) }) >= 4 * LINES);
    }, 90_000);
    s.child.kill('SIGTERM');
    const exit = await s.exit;
    streaming = false;
    const results = await Promise.all(runs);
    expect(exit).toEqual({ code: 0, signal: null });
    expect(pids.filter(alive)).toEqual([]);
    const logs = s.logs();
    // Each process stopped in order before the primary was done.
    for (const p of [0, 1]) {
      expect(logs.some((l) => l.msg === 'gateway stopped' && l.process === p)).toBe(true);
      expect(logs.some((l) => l.msg === `gateway process ${p} (pid ${pids[p]}) exited (exit code 0)`)).toBe(true);
    }
    expect(logs.at(-1)?.msg).toBe('all 2 gateway processes stopped');
    const acked = results.flatMap((r) => r.acked);
    expect(acked.length).toBeGreaterThan(0);
    // Committed, not spooled: the database was up.
    expect([0, 1].map((p) => segmentBytes(join(s.spoolDir, `process-${p}`)))).toEqual([0, 0]);
    await expectExactlyOnce('term', acked);
  }, 240_000);

  it('segments left by a run with another process count are moved where the next run replays them', async () => {
    const proxy = await PgProxy.start(cluster().bouncerPort);
    const spoolDir = tempDir();
    const f = facilities[2]!;
    const acked: Req[] = [];
    const send = async (base: string, n: number) => {
      const r = await post(base, '/api/v2/write?precision=ms', body('stranded', n), { Authorization: `Token ${f.token}` });
      if (r.status === 204) acked.push({ facility: f.code, n });
      return r.status;
    };
    try {
      // A single-process run spools during an outage and is stopped: its segments are at the top level.
      const one = await Serve.start({ dbUrl: proxy.url(t.name), processes: '1', spoolDir });
      expect(await one.announced()).toMatch(/^strata serve: region test-1, listening on http:\/\/127\.0\.0\.1:\d+, writing to \S+$/);
      expect(await send(one.base, 0)).toBe(204); // loads the facility's series
      proxy.setDown(true);
      for (let n = 1; n <= 5; n++) expect(await send(one.base, n)).toBe(204);
      expect(await one.stop()).toEqual({ code: 0, signal: null });
      expect(segmentBytes(spoolDir)).toBeGreaterThan(0);
      proxy.setDown(false);

      // Two processes: the primary moves them into process-0, which replays them.
      const two = await Serve.start({ dbUrl: proxy.url(t.name), spoolDir });
      try {
        await two.announced();
        expect(segmentBytes(spoolDir)).toBe(0);
        expect(two.logs().some((l) => /^moved \d+ spool segment\(s\) left by a run with another process count/.test(l.msg) && l.from === spoolDir && l.to === join(spoolDir, 'process-0'))).toBe(true);
        await until('process 0 to replay them', () => segmentBytes(join(spoolDir, 'process-0')) === 0, 90_000);
        await expectExactlyOnce('stranded', acked, true);

        // And back: both processes spool during an outage, then a single-process run replays both.
        let n = 100;
        await until('both processes to have taken a write', async () => {
          await Promise.all([send(two.base, n++), send(two.base, n++)]);
          const text = await scrape(two.base);
          return [0, 1].every((p) => total(text, 'strata_gateway_process_rows_received_total', { process: String(p) }) > 0);
        }, 60_000);
        proxy.setDown(true);
        const before = acked.length;
        await until('both processes to spool', async () => {
          await Promise.all([send(two.base, n++).catch(() => 0), send(two.base, n++).catch(() => 0)]);
          return segmentBytes(join(spoolDir, 'process-0')) > 0 && segmentBytes(join(spoolDir, 'process-1')) > 0;
        }, 90_000);
        expect(acked.length).toBeGreaterThan(before);
      } finally {
        expect(await two.stop()).toEqual({ code: 0, signal: null });
      }
      proxy.setDown(false);
      const again = await Serve.start({ dbUrl: proxy.url(t.name), processes: '1', spoolDir });
      try {
        await again.announced();
        expect([0, 1].map((p) => segmentBytes(join(spoolDir, `process-${p}`)))).toEqual([0, 0]);
        await until('the single process to replay them', () => segmentBytes(spoolDir) === 0, 90_000);
        await expectExactlyOnce('stranded', acked);
      } finally {
        expect(await again.stop()).toEqual({ code: 0, signal: null });
      }
    } finally {
      proxy.setDown(false);
      await proxy.close();
    }
  }, 400_000);

  it('a replacement that cannot start is retried with a doubling backoff, and starts once it can', async () => {
    const s = await Serve.start({ dbUrl: cluster().bouncerUrl(t.name) });
    try {
      await s.announced();
      const [victim] = s.pidsOf(1);
      const dir = join(s.spoolDir, 'process-1');
      // A live process (this test's) now holds process 1's spool: its replacements fail with spool_locked.
      writeFileSync(join(dir, 'spool.lock'), `${process.pid}\n`);
      process.kill(victim!, 'SIGKILL');
      const backoffs = () => s.logs().filter((l) => l.process === 1 && typeof l.restartInMs === 'number');
      await until('three replacements to fail', () => backoffs().length >= 3, 120_000);
      const [first, second, third] = backoffs();
      expect(first).toMatchObject({ signal: 'SIGKILL', restartInMs: 1_000 });
      expect(second).toMatchObject({ code: 1, restartInMs: 2_000, exitsInARow: 2 });
      expect(second!.msg).toMatch(/^gateway process 1 \(pid \d+\) died \(exit code 1\) \d+ s after it started, 2 times in a row: crash loop, backing off 2 s before the next replacement \(spool .* is locked by running process \d+/);
      expect(third).toMatchObject({ restartInMs: 4_000, exitsInARow: 3 });
      // Process 0 serves all along.
      expect(await post(s.base, '/api/v2/write?precision=ms', body('loop', 0), { Authorization: `Token ${facilities[0]!.token}` }).then((r) => r.status)).toBe(204);
      rmSync(join(dir, 'spool.lock'));
      await until('process 1 to listen again', () => {
        const latest = s.pidsOf(1).at(-1)!;
        return latest !== victim && s.listening(1, latest);
      }, 120_000);
      expect(total(await scrape(s.base), 'strata_gateway_process_restarts_total', { process: '1' })).toBeGreaterThanOrEqual(3);
    } finally {
      expect(await s.stop()).toEqual({ code: 0, signal: null });
    }
  }, 300_000);

  it('a process that fails to start stops the others: strata serve exits 1 naming the cause', async () => {
    const blocker = createServer();
    await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', r));
    const port = (blocker.address() as { port: number }).port;
    try {
      const s = await Serve.start({ dbUrl: cluster().bouncerUrl(t.name), env: { STRATA_LISTEN: `127.0.0.1:${port}` } });
      expect(await s.exit).toEqual({ code: 1, signal: null });
      expect(s.err).toMatch(new RegExp(`strata: gateway process \\d \\(pid \\d+\\) failed to start \\(exit code 1\\): cannot listen on 127\\.0\\.0\\.1:${port}: the port is in use`));
      expect(s.out).toBe('');
    } finally {
      blocker.close();
    }
  }, 120_000);

  it('names --processes and STRATA_GATEWAY_PROCESSES when their value is bad', async () => {
    expect(await strata(['serve', '--processes', '0'], {})).toMatchObject({ code: 64, err: expect.stringContaining('strata serve: --processes "0" must be a whole number from 1 to 1024') });
    expect(await strata(['serve', '--processes', 'all'], {})).toMatchObject({ code: 64, err: expect.stringContaining('--processes "all" must be a whole number') });
    expect(await strata(['serve', '--processes'], {})).toMatchObject({ code: 64, err: expect.stringContaining("'--processes <value>' argument missing") });
    expect(await strata(['serve'], { STRATA_GATEWAY_PROCESSES: 'many' })).toMatchObject({ code: 78, err: expect.stringContaining('STRATA_GATEWAY_PROCESSES="many": must be a whole number') });
    expect(await strata(['serve', '--processes', '2'], { STRATA_REGION: 'test-1' })).toMatchObject({ code: 78, err: expect.stringContaining('STRATA_DATABASE_URL is required for strata serve') });
  });
});
