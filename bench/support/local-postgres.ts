// A private, plain PostgreSQL cluster for a benchmark (no TimescaleDB): initdb in a fresh directory
// under the temporary directory, on a free loopback port, run as the `postgres` OS user when the
// benchmark runs as root (as test/support/cluster.ts does); trust authentication on loopback only.
// stop() shuts it down and removes the directory.
import { execFile, execFileSync } from 'node:child_process';
import { appendFileSync, chownSync, existsSync, mkdtempSync, rmSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);
export const PG_BIN = process.env.STRATA_BENCH_PG_BIN ?? '/usr/lib/postgresql/15/bin';

/** Settings appended to postgresql.conf (recorded in the benchmark's results). */
export const LOCAL_PG_SETTINGS: Record<string, string> = {
  max_connections: '200',
  shared_buffers: "'512MB'",
  max_wal_size: "'4GB'",
  checkpoint_timeout: "'15min'",
  fsync: 'on',
  synchronous_commit: 'on',
};

export interface LocalPostgres {
  /** Superuser URL (user postgres, no password: trust on loopback). */
  url: string;
  port: number;
  dir: string;
  stop(): Promise<void>;
}

function osUser(): { uid: number; gid: number } | null {
  if (process.getuid?.() !== 0) return null;
  return { uid: Number(execFileSync('id', ['-u', 'postgres']).toString()), gid: Number(execFileSync('id', ['-g', 'postgres']).toString()) };
}

async function as(cmd: string, args: string[]): Promise<void> {
  const [file, argv] = osUser() ? ['runuser', ['-u', 'postgres', '--', cmd, ...args]] : [cmd, args];
  try {
    await run(file, argv, { maxBuffer: 16 << 20 });
  } catch (err) {
    const e = err as { stderr?: string; stdout?: string; message: string };
    throw new Error(`${cmd} ${args.join(' ')} failed: ${e.message}\n${e.stderr ?? ''}${e.stdout ?? ''}`);
  }
}

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

const reachable = (port: number) =>
  new Promise<boolean>((resolve) => {
    const s = connect(port, '127.0.0.1');
    s.once('connect', () => (s.destroy(), resolve(true)));
    s.once('error', () => resolve(false));
  });

export async function startLocalPostgres(log: (line: string) => void = () => {}): Promise<LocalPostgres> {
  if (!existsSync(join(PG_BIN, 'initdb'))) throw new Error(`${PG_BIN}/initdb not found: install postgresql-15 (or set STRATA_BENCH_PG_BIN)`);
  const dir = mkdtempSync(join(tmpdir(), 'strata-bench-pg-'));
  const user = osUser();
  if (user) chownSync(dir, user.uid, user.gid);
  const data = join(dir, 'data');
  const port = await freePort();
  log(`initdb ${data} (plain PostgreSQL, port ${port}) …`);
  await as(join(PG_BIN, 'initdb'), ['-D', data, '-U', 'postgres', '--auth=trust', '-E', 'UTF8', '--locale=C.UTF-8']);
  const conf = { port: String(port), listen_addresses: "'127.0.0.1'", unix_socket_directories: `'${dir}'`, ...LOCAL_PG_SETTINGS };
  appendFileSync(join(data, 'postgresql.conf'), Object.entries(conf).map(([k, v]) => `${k} = ${v}`).join('\n') + '\n');
  await as(join(PG_BIN, 'pg_ctl'), ['-D', data, '-l', join(dir, 'postgres.log'), '-w', 'start']);
  for (let i = 0; !(await reachable(port)); i++) {
    if (i > 200) throw new Error(`PostgreSQL did not start; see ${dir}/postgres.log`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    url: `postgres://postgres@127.0.0.1:${port}/postgres`,
    port,
    dir,
    async stop() {
      await as(join(PG_BIN, 'pg_ctl'), ['-D', data, '-m', 'fast', '-w', 'stop']).catch((err: unknown) => log(`stopping PostgreSQL: ${String(err)}`));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
