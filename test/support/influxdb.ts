// A throwaway InfluxDB 1.6 (Debian's `influxdb` package, /usr/bin/influxd) on loopback for a test:
// a temporary directory holding its config, meta, data and WAL; the HTTP API and the RPC service
// each on a free port; reporting, the monitor store, background services and logs turned off.
// influxd runs as root without complaint, so it runs as whichever user runs the tests.
//
// Every request goes through node:http, not fetch: InfluxDB 1.6 copies the bytes of a bad line into
// its `X-Influxdb-Error` header (NULs and invalid UTF-8 included), which undici refuses outright;
// node:http reads it with the lenient parser.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from './cluster.ts';

export const INFLUXD = process.env.STRATA_TEST_INFLUXD ?? '/usr/bin/influxd';

export interface HttpReply {
  /** HTTP status, or 0 when the connection failed (refused, reset, closed without an answer). */
  status: number;
  text: string;
  headers: Record<string, string | string[] | undefined>;
  /** The connection error, when status is 0. */
  error?: string;
}

/** One HTTP request over node:http; never throws for a network failure (status 0 instead). */
export function http(
  url: string,
  opts: { method?: string; body?: string | Uint8Array; headers?: Record<string, string>; timeoutMs?: number } = {},
): Promise<HttpReply> {
  return new Promise((resolve) => {
    let settled = false;
    const done = (r: HttpReply) => {
      if (!settled) (settled = true), resolve(r);
    };
    const body = opts.body === undefined ? undefined : typeof opts.body === 'string' ? Buffer.from(opts.body, 'utf8') : Buffer.from(opts.body);
    const req = request(
      url,
      {
        method: opts.method ?? 'GET',
        insecureHTTPParser: true,
        agent: false,
        headers: { ...(body ? { 'Content-Length': String(body.length) } : {}), ...opts.headers },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => done({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8'), headers: res.headers }));
        res.on('error', (err) => done({ status: 0, text: '', headers: {}, error: err.message }));
      },
    );
    req.setTimeout(opts.timeoutMs ?? 15_000, () => req.destroy(new Error('timed out')));
    req.on('error', (err) => done({ status: 0, text: '', headers: {}, error: err.message }));
    req.end(body);
  });
}

export interface InfluxQueryResult {
  results: { statement_id: number; error?: string; series?: { name: string; tags?: Record<string, string>; columns: string[]; values: unknown[][] }[] }[];
  error?: string;
}

export interface Influx {
  readonly url: string;
  readonly dir: string;
  readonly database: string;
  /** `POST /write?db=<database>[&precision=…][&rp=…]` with the body as given. */
  write(body: string | Uint8Array, opts?: { precision?: string; rp?: string }): Promise<HttpReply>;
  /** `GET /query?db=<database>&q=…` (reads), parsed; throws when the answer is not JSON or holds an error. */
  query(q: string): Promise<InfluxQueryResult>;
  /** `POST /query?db=<database>&q=…` (statements that change something), parsed; throws like query(). */
  exec(q: string): Promise<InfluxQueryResult>;
  /** What influxd wrote to stdout and stderr so far (for failure messages). */
  log(): string;
  /** Kills influxd (SIGTERM, then SIGKILL) and removes its directory; safe to call twice. */
  stop(): Promise<void>;
}

function config(dir: string, httpPort: number, rpcPort: number): string {
  return `reporting-enabled = false
bind-address = "127.0.0.1:${rpcPort}"

[meta]
  dir = "${join(dir, 'meta')}"
  logging-enabled = false

[data]
  dir = "${join(dir, 'data')}"
  wal-dir = "${join(dir, 'wal')}"
  wal-fsync-delay = "0s"
  query-log-enabled = false
  trace-logging-enabled = false

[monitor]
  store-enabled = false

[http]
  enabled = true
  bind-address = "127.0.0.1:${httpPort}"
  auth-enabled = false
  log-enabled = false
  suppress-write-log = true
  pprof-enabled = false

[logging]
  level = "error"
  suppress-logo = true

[retention]
  enabled = false

[shard-precreation]
  enabled = false

[continuous_queries]
  enabled = false

[subscriber]
  enabled = false
`;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function exited(child: ChildProcess): Promise<void> {
  return child.exitCode !== null || child.signalCode !== null ? Promise.resolve() : new Promise((r) => child.once('exit', () => r()));
}

async function startOnce(database: string, timeoutMs: number): Promise<Influx> {
  const dir = mkdtempSync(join(tmpdir(), 'strata-influx-'));
  const httpPort = await freePort();
  let rpcPort = await freePort();
  while (rpcPort === httpPort) rpcPort = await freePort();
  const confFile = join(dir, 'influxdb.conf');
  writeFileSync(confFile, config(dir, httpPort, rpcPort));
  const output: string[] = [];
  const child = spawn(INFLUXD, ['run', '-config', confFile], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, INFLUXDB_CONFIG_PATH: confFile } });
  child.stdout!.on('data', (d: Buffer) => output.push(d.toString()));
  child.stderr!.on('data', (d: Buffer) => output.push(d.toString()));
  const spawnError = new Promise<Error>((resolve) => child.once('error', resolve));
  // A test runner that dies without its teardown still takes influxd with it.
  const killOnExit = () => child.kill('SIGKILL');
  process.once('exit', killOnExit);

  const url = `http://127.0.0.1:${httpPort}`;
  let stopped = false;
  const influx: Influx = {
    url,
    dir,
    database,
    write(body, o = {}) {
      const params = new URLSearchParams({ db: database });
      if (o.precision) params.set('precision', o.precision);
      if (o.rp) params.set('rp', o.rp);
      return http(`${url}/write?${params}`, { method: 'POST', body, headers: { 'Content-Type': 'text/plain; charset=utf-8' } });
    },
    query: (q) => queryJson(url, 'GET', database, q),
    exec: (q) => queryJson(url, 'POST', database, q),
    log: () => output.join(''),
    async stop() {
      if (stopped) return;
      stopped = true;
      process.removeListener('exit', killOnExit);
      // A child that never spawned (no pid) has nothing to wait for.
      if (child.pid !== undefined && child.exitCode === null && child.signalCode === null) {
        const gone = exited(child);
        child.kill('SIGTERM');
        if (!(await Promise.race([gone.then(() => true), sleep(5_000).then(() => false)]))) {
          child.kill('SIGKILL');
          await Promise.race([gone, sleep(5_000)]);
        }
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };

  try {
    // Poll /ping until it answers 204, or influxd exits, or the deadline passes.
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const failed = await Promise.race([spawnError, sleep(0).then(() => null)]);
      if (failed) throw new Error(`cannot run ${INFLUXD}: ${failed.message} (apt-get install influxdb)`);
      if (child.exitCode !== null || child.signalCode !== null) throw new Error(`influxd exited (${child.exitCode ?? child.signalCode}) before answering /ping:\n${influx.log().slice(-2000)}`);
      const ping = await http(`${url}/ping`, { timeoutMs: 1_000 });
      if (ping.status === 204) break;
      if (Date.now() > deadline) throw new Error(`influxd did not answer /ping with 204 within ${timeoutMs} ms (last: ${ping.status || ping.error}):\n${influx.log().slice(-2000)}`);
      await sleep(50);
    }
    await queryJson(url, 'POST', null, `CREATE DATABASE "${database}"`);
    return influx;
  } catch (err) {
    await influx.stop();
    throw err;
  }
}

/**
 * Starts influxd with a database `database` created; call `stop()` in teardown. A start that fails
 * (e.g. a free port taken by someone else in the meantime) is retried on new ports.
 */
export async function startInflux(opts: { database?: string; timeoutMs?: number; attempts?: number } = {}): Promise<Influx> {
  const attempts = opts.attempts ?? 3;
  let last: unknown;
  for (let i = 0; i < attempts; i++) {
    try {
      return await startOnce(opts.database ?? 'conf', opts.timeoutMs ?? 60_000);
    } catch (err) {
      last = err;
      if (/cannot run/.test((err as Error).message)) break;
    }
  }
  throw last;
}

async function queryJson(url: string, method: 'GET' | 'POST', database: string | null, q: string): Promise<InfluxQueryResult> {
  const params = new URLSearchParams({ q });
  if (database) params.set('db', database);
  const r = await http(`${url}/query?${params}`, { method });
  let parsed: InfluxQueryResult;
  try {
    parsed = JSON.parse(r.text) as InfluxQueryResult;
  } catch {
    throw new Error(`InfluxDB ${JSON.stringify(q)} answered ${r.status || r.error}: ${r.text.slice(0, 500)}`);
  }
  const error = parsed.error ?? parsed.results?.find((x) => x.error)?.error;
  if (error) throw new Error(`InfluxDB ${JSON.stringify(q)} failed: ${error}`);
  return parsed;
}

/** `"name"` as an InfluxQL identifier. */
export const ident = (name: string) => `"${name.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`;

/**
 * Field values stored per measurement (strings, booleans and numbers alike): the sum of `count(*)`
 * over each measurement's fields, in one retention policy (default: the database's default one).
 *
 * InfluxQL resolves a field's type over every measurement a query reads: with a regular expression
 * as the source, a measurement whose field `a` is a boolean vanishes from the answer when another
 * measurement has a float `a`. Counting in a retention policy that only one test case wrote to
 * avoids that.
 */
export async function fieldCounts(influx: Influx, rp?: string): Promise<Map<string, number>> {
  const from = rp ? `${ident(influx.database)}.${ident(rp)}./.*/` : '/.*/';
  const r = await influx.query(`SELECT count(*) FROM ${from}`);
  const out = new Map<string, number>();
  for (const s of r.results[0]?.series ?? []) {
    let n = 0;
    for (const row of s.values) for (let c = 1; c < row.length; c++) if (typeof row[c] === 'number') n += row[c] as number;
    out.set(s.name, (out.get(s.name) ?? 0) + n);
  }
  return out;
}
