// The production write path on loopback, for failover tests: a PostgreSQL 15 primary, a streaming
// standby made by `pg_basebackup -R` (synchronous, as Patroni runs its replica), HAProxy in tcp mode
// in front (the primary, the standby as backup, TCP checks every 200 ms, on-marked-down
// shutdown-sessions; an admin socket to move the endpoint by hand), and PgBouncer in transaction
// pooling (server_login_retry = 1) in front of HAProxy. Everything runs as a non-root OS user (the
// `postgres` user when the tests run as root) in one temporary directory; destroy() stops it all.
//
//   const s = await startFailoverStack();
//   s.bouncerUrl('postgres')          // what a gateway uses
//   await s.stopPrimary();            // fault (a): the backup (still a standby) gets the endpoint
//   await s.setReadOnly(true);        // fault (b): the primary stays up, read-only, connections kept
//   await s.promoteStandby();         // pg_ctl promote; resolves once it accepts writes
//   await s.routeTo('standby');       // primary in maintenance, its sessions shut down
import { execFile, execFileSync } from 'node:child_process';
import { chownSync, existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import { PASSWORD, PGBOUNCER, PG_BIN, SUPERUSER, bouncerIni, freePort, urlFor } from './cluster.ts';
import { until } from './wait.ts';

const run = promisify(execFile);
export const HAPROXY = process.env.STRATA_TEST_HAPROXY ?? '/usr/sbin/haproxy';

export type Node = 'primary' | 'standby';

export interface FailoverStack {
  readonly dir: string;
  readonly ports: { primary: number; standby: number; haproxy: number; bouncer: number };
  /** Direct to one node, as the superuser. */
  nodeUrl(node: Node, database?: string): string;
  /** Through HAProxy (the write endpoint), no pooler. */
  haproxyUrl(database?: string): string;
  /** Through PgBouncer → HAProxy: what a gateway is given. */
  bouncerUrl(database?: string): string;
  /** One statement on one node, on a fresh connection. */
  query<R = Record<string, unknown>>(node: Node, sql: string, params?: unknown[], database?: string): Promise<R[]>;
  /** `pg_ctl stop` of the primary; with HAProxy's TCP check the backup (the standby) takes the endpoint. */
  stopPrimary(mode?: 'fast' | 'immediate'): Promise<void>;
  /**
   * The primary stays up but refuses writes: ALTER SYSTEM SET default_transaction_read_only + reload.
   * Open sessions keep their connections and see it from their next transaction; resolves once they do.
   */
  setReadOnly(on: boolean): Promise<void>;
  /** Waits until the standby has replayed everything the (running) primary wrote. */
  waitForStandby(): Promise<void>;
  /** `pg_ctl promote -w`; resolves once the standby accepts writes. */
  promoteStandby(): Promise<void>;
  /** Sends new connections to `node` (the other in maintenance, its sessions shut down), as an operator would. */
  routeTo(node: Node): Promise<void>;
  /** Where HAProxy would send a new connection now: the first server that is UP, actives before the backup. */
  routedTo(): Promise<Node | null>;
  /** A command on HAProxy's admin socket; resolves with its answer. */
  haproxy(command: string): Promise<string>;
  destroy(): Promise<void>;
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

function own(path: string): void {
  const user = osUser();
  if (user) chownSync(path, user.uid, user.gid);
}

function write(path: string, text: string): void {
  writeFileSync(path, text);
  own(path);
}


async function portOpen(port: number): Promise<boolean> {
  return new Promise<boolean>((resolve) => {
    const s = connect(port, '127.0.0.1');
    s.once('connect', () => (s.destroy(), resolve(true)));
    s.once('error', () => resolve(false));
  });
}

async function sql<R>(url: string, text: string, params: unknown[] = []): Promise<R[]> {
  const c = new pg.Client({ connectionString: url, connectionTimeoutMillis: 5_000 });
  c.on('error', () => {});
  await c.connect();
  try {
    return (await c.query(text, params)).rows as R[];
  } finally {
    await c.end().catch(() => {});
  }
}

function adminSocket(path: string, command: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = connect(path);
    let out = '';
    s.setEncoding('utf8');
    s.on('data', (d: string) => (out += d));
    s.once('error', reject);
    s.once('close', () => resolve(out));
    s.once('connect', () => s.end(`${command}\n`));
  });
}

export async function startFailoverStack(): Promise<FailoverStack> {
  for (const bin of [`${PG_BIN}/initdb`, `${PG_BIN}/pg_basebackup`, PGBOUNCER, HAPROXY]) {
    if (!existsSync(bin)) throw new Error(`${bin} not found: install postgresql-15, pgbouncer and haproxy (sudo apt-get install postgresql-15 pgbouncer haproxy)`);
  }
  const dir = mkdtempSync(join(tmpdir(), 'strata-failover-'));
  own(dir);
  const ports = { primary: await freePort(), standby: await freePort(), haproxy: await freePort(), bouncer: await freePort() };
  const data = { primary: join(dir, 'primary'), standby: join(dir, 'standby') };
  const log = (node: Node) => join(dir, `${node}.log`);
  const sock = join(dir, 'haproxy.sock');
  const nodeUrl = (node: Node, database = 'postgres') => urlFor(ports[node], database);
  const started = { primary: false, standby: false, haproxy: false, bouncer: false };

  const pgStart = async (node: Node) => {
    await as(`${PG_BIN}/pg_ctl`, ['-D', data[node], '-l', log(node), '-w', 'start']);
    started[node] = true;
  };
  const pgStop = async (node: Node, mode: 'fast' | 'immediate') => {
    await as(`${PG_BIN}/pg_ctl`, ['-D', data[node], '-m', mode, '-w', 'stop']);
    started[node] = false;
  };

  const stack: FailoverStack = {
    dir,
    ports,
    nodeUrl,
    haproxyUrl: (database = 'postgres') => urlFor(ports.haproxy, database),
    bouncerUrl: (database = 'postgres') => urlFor(ports.bouncer, database),
    query: (node, text, params = [], database = 'postgres') => sql(nodeUrl(node, database), text, params),
    stopPrimary: (mode = 'fast') => pgStop('primary', mode),
    async setReadOnly(on) {
      // One session opened before the change stands for the kept connections: it must see it.
      const c = new pg.Client({ connectionString: nodeUrl('primary') });
      c.on('error', () => {});
      await c.connect();
      try {
        await c.query('SET default_transaction_read_only = off'); // so ALTER SYSTEM runs either way
        await c.query(`ALTER SYSTEM SET default_transaction_read_only = ${on ? 'on' : 'off'}`);
        await c.query('SELECT pg_reload_conf()');
        await c.query('RESET default_transaction_read_only');
        await until(`the primary's sessions to see default_transaction_read_only = ${on}`, async () => {
          const r = await c.query<{ ro: string }>(`SELECT current_setting('transaction_read_only') AS ro`);
          return r.rows[0]!.ro === (on ? 'on' : 'off');
        });
      } finally {
        await c.end().catch(() => {});
      }
    },
    async waitForStandby() {
      const lsn = (await sql<{ lsn: string }>(nodeUrl('primary'), 'SELECT pg_current_wal_lsn()::text AS lsn'))[0]!.lsn;
      await until('the standby to replay the primary’s WAL', async () => {
        const [r] = await sql<{ caught: boolean }>(nodeUrl('standby'), `SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn AS caught`, [lsn]);
        return r!.caught;
      });
    },
    async promoteStandby() {
      await as(`${PG_BIN}/pg_ctl`, ['-D', data.standby, '-w', 'promote']);
      await until('the promoted standby to accept writes', async () => {
        const [r] = await sql<{ rw: boolean }>(nodeUrl('standby'), `SELECT NOT pg_is_in_recovery() AND current_setting('transaction_read_only') = 'off' AS rw`);
        return r!.rw;
      });
    },
    async routeTo(node) {
      const other: Node = node === 'primary' ? 'standby' : 'primary';
      await stack.haproxy(`set server pg/${node} state ready`);
      await stack.haproxy(`set server pg/${other} state maint`);
      await stack.haproxy(`shutdown sessions server pg/${other}`);
      await until(`HAProxy to route to the ${node}`, async () => (await stack.routedTo()) === node);
    },
    async routedTo() {
      // `show servers state` columns: ... srv_name(3) srv_addr(4) srv_op_state(5: 2 = running) srv_admin_state(6: 0 = none) ...
      const lines = (await stack.haproxy('show servers state pg')).split('\n').filter((l) => /^\d+ pg /.test(l));
      const up = new Set(lines.map((l) => l.split(' ')).filter((f) => f[5] === '2' && f[6] === '0').map((f) => f[3]));
      if (up.has('primary')) return 'primary';
      if (up.has('standby')) return 'standby';
      return null;
    },
    haproxy: (command) => adminSocket(sock, command),
    async destroy() {
      if (started.bouncer) await as('sh', ['-c', `kill $(cat ${dir}/pgbouncer.pid)`]).catch(() => {});
      if (started.haproxy) await as('sh', ['-c', `kill $(cat ${dir}/haproxy.pid)`]).catch(() => {});
      for (const node of ['primary', 'standby'] as const) if (existsSync(join(data[node], 'postmaster.pid'))) await pgStop(node, 'immediate').catch(() => {});
      rmSync(dir, { recursive: true, force: true });
    },
  };

  try {
    // The primary.
    write(join(dir, 'pwfile'), PASSWORD + '\n');
    await as(`${PG_BIN}/initdb`, ['-D', data.primary, '-U', SUPERUSER, `--pwfile=${join(dir, 'pwfile')}`, '--auth-local=trust', '--auth-host=scram-sha-256', '-E', 'UTF8', '--locale=C.UTF-8']);
    const conf = [
      `port = ${ports.primary}`,
      `listen_addresses = '127.0.0.1'`,
      `unix_socket_directories = '${dir}'`,
      'max_connections = 100',
      'fsync = off',
      'full_page_writes = off',
      'shared_buffers = 32MB',
      'wal_level = replica',
      'max_wal_senders = 4',
      'hot_standby = on',
      `cluster_name = 'strata-failover'`,
    ];
    await as('sh', ['-c', `printf '%s\\n' ${conf.map((l) => `"${l}"`).join(' ')} >> ${data.primary}/postgresql.conf`]);
    await pgStart('primary');

    // The standby: a base backup that writes standby.signal and primary_conninfo (-R).
    await as(`${PG_BIN}/pg_basebackup`, ['-D', data.standby, '-R', '-X', 'stream', '-c', 'fast', '-d', `host=127.0.0.1 port=${ports.primary} user=${SUPERUSER} password=${PASSWORD} dbname=postgres`]);
    await as('sh', ['-c', `chmod 700 ${data.standby} && printf '%s\\n' "port = ${ports.standby}" >> ${data.standby}/postgresql.conf`]);
    await pgStart('standby');
    await until('the standby to stream from the primary', async () => {
      const r = await sql<{ n: number }>(nodeUrl('primary'), `SELECT count(*)::int AS n FROM pg_stat_replication WHERE state = 'streaming'`);
      return r[0]!.n === 1;
    });
    // Synchronous, as Patroni's synchronous_mode: a commit the primary acknowledged is on the standby.
    await sql(nodeUrl('primary'), `ALTER SYSTEM SET synchronous_standby_names = '*'`);
    await sql(nodeUrl('primary'), 'SELECT pg_reload_conf()');
    await until('the standby to be synchronous', async () => {
      const r = await sql<{ n: number }>(nodeUrl('primary'), `SELECT count(*)::int AS n FROM pg_stat_replication WHERE sync_state = 'sync'`);
      return r[0]!.n === 1;
    });

    // HAProxy: the write endpoint. In production its check is Patroni's REST API (option httpchk GET
    // /primary); here a TCP check, so a stopped primary hands the endpoint to the backup at once.
    const cfg = [
      'global',
      `  stats socket ${sock} mode 600 level admin`,
      '  maxconn 500',
      'defaults',
      '  mode tcp',
      '  timeout connect 1s',
      '  timeout client 1h',
      '  timeout server 1h',
      '  timeout check 1s',
      '  retries 2',
      '  option redispatch',
      'frontend pg_in',
      `  bind 127.0.0.1:${ports.haproxy}`,
      '  default_backend pg',
      'backend pg',
      '  default-server inter 200 fall 1 rise 1 on-marked-down shutdown-sessions',
      `  server primary 127.0.0.1:${ports.primary} check`,
      `  server standby 127.0.0.1:${ports.standby} check backup`,
    ];
    write(join(dir, 'haproxy.cfg'), cfg.join('\n') + '\n');
    await as(HAPROXY, ['-f', join(dir, 'haproxy.cfg'), '-D', '-p', join(dir, 'haproxy.pid')]);
    started.haproxy = true;
    await until('HAProxy to route to the primary', async () => (await stack.routedTo()) === 'primary');

    // PgBouncer, transaction pooling, in front of HAProxy.
    const ini = bouncerIni({ dir, upstreamPort: ports.haproxy, listenPort: ports.bouncer, maxClientConn: 200, extra: ['server_connect_timeout = 2'] });
    write(join(dir, 'pgbouncer.ini'), ini + '\n');
    write(join(dir, 'userlist.txt'), `"${SUPERUSER}" "${PASSWORD}"\n`);
    await as(PGBOUNCER, ['-d', join(dir, 'pgbouncer.ini')]);
    started.bouncer = true;
    await until('PgBouncer to listen', () => portOpen(ports.bouncer));
    await until('a query through PgBouncer and HAProxy', async () => (await sql<{ x: number }>(stack.bouncerUrl(), 'SELECT 1 AS x'))[0]!.x === 1);
  } catch (err) {
    await stack.destroy();
    throw err;
  }
  return stack;
}
