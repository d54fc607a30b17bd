// A throwaway native PostgreSQL 15 + PgBouncer (transaction pooling) on loopback, in a temporary
// directory, run as a non-root OS user (the `postgres` user when the tests run as root).
import { execFile, execFileSync } from 'node:child_process';
import { chownSync, existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);
export const PG_BIN = process.env.STRATA_TEST_PG_BIN ?? '/usr/lib/postgresql/15/bin';
export const PGBOUNCER = process.env.STRATA_TEST_PGBOUNCER ?? '/usr/sbin/pgbouncer';
export const SUPERUSER = 'strata';
export const PASSWORD = 'strata-test-pw';

export interface ClusterInfo {
  dir: string;
  pgPort: number;
  bouncerPort: number;
}

function osUser(): { uid: number; gid: number; name: string } | null {
  if (process.getuid?.() !== 0) return null;
  const uid = Number(execFileSync('id', ['-u', 'postgres']).toString().trim());
  const gid = Number(execFileSync('id', ['-g', 'postgres']).toString().trim());
  return { uid, gid, name: 'postgres' };
}

async function as(cmd: string, args: string[]): Promise<string> {
  const user = osUser();
  const [file, argv] = user ? ['runuser', ['-u', user.name, '--', cmd, ...args]] : [cmd, args];
  try {
    const { stdout } = await run(file, argv, { maxBuffer: 16 << 20 });
    return stdout;
  } catch (err) {
    const e = err as { stderr?: string; stdout?: string; message: string };
    throw new Error(`${cmd} ${args.join(' ')} failed: ${e.message}\n${e.stderr ?? ''}${e.stdout ?? ''}`);
  }
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => resolve(port));
    });
  });
}

async function waitForPort(port: number, up: boolean, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const open = await new Promise<boolean>((resolve) => {
      const s = connect(port, '127.0.0.1');
      s.once('connect', () => (s.destroy(), resolve(true)));
      s.once('error', () => resolve(false));
    });
    if (open === up) return;
    if (Date.now() > deadline) throw new Error(`port ${port} did not become ${up ? 'reachable' : 'closed'} within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

export function urlFor(port: number, database = 'postgres', user = SUPERUSER, password = PASSWORD): string {
  return `postgres://${encodeURIComponent(user)}:${encodeURIComponent(password)}@127.0.0.1:${port}/${database}`;
}

/** A PgBouncer configuration in transaction pooling (server_login_retry = 1) in front of `upstreamPort`, files in `dir`. */
export function bouncerIni(o: { dir: string; upstreamPort: number; listenPort: number; maxClientConn: number; extra?: string[] }): string {
  return [
    '[databases]',
    `* = host=127.0.0.1 port=${o.upstreamPort}`,
    '[pgbouncer]',
    'listen_addr = 127.0.0.1',
    `listen_port = ${o.listenPort}`,
    `unix_socket_dir = ${o.dir}`,
    'auth_type = scram-sha-256',
    `auth_file = ${o.dir}/userlist.txt`,
    'pool_mode = transaction',
    'server_login_retry = 1',
    ...(o.extra ?? []),
    `max_client_conn = ${o.maxClientConn}`,
    'default_pool_size = 20',
    'ignore_startup_parameters = extra_float_digits,options',
    `pidfile = ${o.dir}/pgbouncer.pid`,
    `logfile = ${o.dir}/pgbouncer.log`,
    `admin_users = ${SUPERUSER}`,
  ].join('\n');
}

export class Cluster implements ClusterInfo {
  constructor(
    readonly dir: string,
    readonly pgPort: number,
    readonly bouncerPort: number,
    /** The PostgreSQL binaries (a relocated copy for a test that needs extension files of its own). */
    readonly pgBin = PG_BIN,
  ) {}

  static async create(opts: { pgBin?: string } = {}): Promise<Cluster> {
    const pgBin = opts.pgBin ?? PG_BIN;
    for (const bin of [`${pgBin}/initdb`, PGBOUNCER]) {
      if (!existsSync(bin)) throw new Error(`${bin} not found: install postgresql-15 and pgbouncer (sudo apt-get install postgresql-15 pgbouncer)`);
    }
    const dir = mkdtempSync(join(tmpdir(), 'strata-pg-'));
    const user = osUser();
    if (user) chownSync(dir, user.uid, user.gid);
    const c = new Cluster(dir, await freePort(), await freePort(), pgBin);
    writeFileSync(join(dir, 'pwfile'), PASSWORD + '\n');
    if (user) chownSync(join(dir, 'pwfile'), user.uid, user.gid);
    await as(`${pgBin}/initdb`, ['-D', c.dataDir, '-U', SUPERUSER, `--pwfile=${join(dir, 'pwfile')}`, '--auth-local=trust', '--auth-host=scram-sha-256', '-E', 'UTF8', '--locale=C.UTF-8']);
    const conf = [
      `port = ${c.pgPort}`,
      `listen_addresses = '127.0.0.1'`,
      `unix_socket_directories = '${dir}'`,
      'max_connections = 200',
      'fsync = off',
      'full_page_writes = off',
      'shared_buffers = 128MB',
    ].join('\n');
    await as('sh', ['-c', `printf '%s\\n' "${conf.replace(/"/g, '\\"')}" >> ${c.dataDir}/postgresql.conf`]);
    const ini = bouncerIni({ dir, upstreamPort: c.pgPort, listenPort: c.bouncerPort, maxClientConn: 500 });
    writeFileSync(join(dir, 'pgbouncer.ini'), ini + '\n');
    writeFileSync(join(dir, 'userlist.txt'), `"${SUPERUSER}" "${PASSWORD}"\n`);
    if (user) for (const f of ['pgbouncer.ini', 'userlist.txt']) chownSync(join(dir, f), user.uid, user.gid);
    try {
      await c.startPostgres();
      await c.startBouncer();
    } catch (err) {
      await c.destroy();
      throw err;
    }
    return c;
  }

  static attach(info: ClusterInfo): Cluster {
    return new Cluster(info.dir, info.pgPort, info.bouncerPort);
  }

  get dataDir(): string {
    return join(this.dir, 'data');
  }

  /** Direct connection, as the superuser. */
  adminUrl(database = 'postgres'): string {
    return urlFor(this.pgPort, database);
  }

  /** Through PgBouncer in transaction pooling mode. */
  bouncerUrl(database = 'postgres'): string {
    return urlFor(this.bouncerPort, database);
  }

  async startPostgres(): Promise<void> {
    await as(`${this.pgBin}/pg_ctl`, ['-D', this.dataDir, '-l', join(this.dir, 'postgres.log'), '-w', 'start']);
    await waitForPort(this.pgPort, true);
  }

  async stopPostgres(mode: 'fast' | 'immediate' = 'fast'): Promise<void> {
    await as(`${this.pgBin}/pg_ctl`, ['-D', this.dataDir, '-m', mode, '-w', 'stop']);
  }

  async startBouncer(): Promise<void> {
    await as(PGBOUNCER, ['-d', join(this.dir, 'pgbouncer.ini')]);
    await waitForPort(this.bouncerPort, true);
  }

  async stopBouncer(): Promise<void> {
    await as('sh', ['-c', `kill $(cat ${this.dir}/pgbouncer.pid)`]);
    await waitForPort(this.bouncerPort, false);
  }

  async destroy(): Promise<void> {
    await this.stopBouncer().catch(() => {});
    await this.stopPostgres('immediate').catch(() => {});
    rmSync(this.dir, { recursive: true, force: true });
  }
}
