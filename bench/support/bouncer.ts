// A PgBouncer (transaction pooling) in front of the benchmark's server, on a free port, in a scratch
// directory; run as the `postgres` OS user when started as root (PgBouncer refuses root).
import { execFileSync } from 'node:child_process';
import { chownSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, connect } from 'node:net';
import { join } from 'node:path';

const PGBOUNCER = process.env.STRATA_BENCH_PGBOUNCER ?? '/usr/sbin/pgbouncer';

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

async function reachable(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1');
    s.once('connect', () => (s.destroy(), resolve(true)));
    s.once('error', () => resolve(false));
  });
}

export async function startBouncer(server: URL, dir: string): Promise<{ url(db: string): string; stop(): Promise<void> }> {
  const port = await freePort();
  const user = decodeURIComponent(server.username || 'postgres');
  const password = server.password ? ` password=${decodeURIComponent(server.password)}` : '';
  writeFileSync(
    join(dir, 'pgbouncer.ini'),
    [
      '[databases]',
      `* = host=${server.hostname} port=${server.port || 5432} user=${user}${password}`,
      '[pgbouncer]',
      'listen_addr = 127.0.0.1',
      `listen_port = ${port}`,
      `unix_socket_dir = ${dir}`,
      'auth_type = any',
      'pool_mode = transaction',
      'max_client_conn = 1000',
      'default_pool_size = 20',
      'ignore_startup_parameters = extra_float_digits,options',
      `pidfile = ${dir}/pgbouncer.pid`,
      `logfile = ${dir}/pgbouncer.log`,
    ].join('\n') + '\n',
  );
  const root = process.getuid?.() === 0;
  if (root) {
    const uid = Number(execFileSync('id', ['-u', 'postgres']).toString());
    const gid = Number(execFileSync('id', ['-g', 'postgres']).toString());
    chownSync(dir, uid, gid);
    chownSync(join(dir, 'pgbouncer.ini'), uid, gid);
  }
  const argv = ['-d', join(dir, 'pgbouncer.ini')];
  execFileSync(root ? 'runuser' : PGBOUNCER, root ? ['-u', 'postgres', '--', PGBOUNCER, ...argv] : argv);
  for (let i = 0; !(await reachable(port)); i++) {
    if (i > 100) throw new Error(`pgbouncer did not start; see ${dir}/pgbouncer.log`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    url: (db) => `postgres://${encodeURIComponent(user)}@127.0.0.1:${port}/${db}`,
    async stop() {
      const pid = Number(readFileSync(join(dir, 'pgbouncer.pid'), 'utf8'));
      process.kill(pid, 'SIGTERM');
      while (await reachable(port)) await new Promise((r) => setTimeout(r, 50));
    },
  };
}
