// TLS to PostgreSQL: a native PostgreSQL 15 with ssl = on and a certificate from a CA this test makes
// (openssl), one database that accepts only TLS; the URL's sslmode/sslrootcert/sslcert/sslkey as
// libpq reads them, through every connection Strata opens; and clear errors naming the setting.
import { execFileSync } from 'node:child_process';
import { appendFileSync, chownSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDb } from '../src/db/open.ts';
import { pgConnection } from '../src/db/tls.ts';
import { jobLocks } from '../src/jobs/lock.ts';
import { makeCa, issue } from './support/certificates.ts';
import { Cluster, urlFor } from './support/cluster.ts';
import { until } from './support/wait.ts';

let c: Cluster;
let ca = '';
let otherCa = '';
const DB = 'strata_tls_only';

/** A CA and a server certificate it signed naming only "localhost" (not 127.0.0.1: the host-name check has something to refuse). */
function certificates(dir: string): void {
  const root = makeCa(dir, 'ca', 'Strata test CA');
  makeCa(dir, 'other', 'Another CA');
  issue(dir, root, 'server', 'localhost', 'DNS:localhost');
}

const url = (host: string, params: Record<string, string>, database = DB) => {
  const u = new URL(urlFor(c.pgPort, database));
  u.hostname = host;
  for (const [k, v] of Object.entries(params)) u.searchParams.set(k, v);
  return u.toString();
};
const connectError = async (u: string) => {
  const db = await openDb(u);
  try {
    await db.query('SELECT 1');
    return '';
  } catch (err) {
    return (err as Error).message;
  } finally {
    await db.close();
  }
};

beforeAll(async () => {
  c = await Cluster.create();
  certificates(c.dir);
  ca = join(c.dir, 'ca.crt');
  otherCa = join(c.dir, 'other.crt');
  const owner = execFileSync('stat', ['-c', '%u:%g', c.dataDir]).toString().trim().split(':').map(Number) as [number, number];
  for (const f of ['server.crt', 'server.key']) chownSync(join(c.dir, f), owner[0], owner[1]);
  execFileSync('chmod', ['600', join(c.dir, 'server.key')]);
  appendFileSync(join(c.dataDir, 'postgresql.conf'), `ssl = on\nssl_cert_file = '${join(c.dir, 'server.crt')}'\nssl_key_file = '${join(c.dir, 'server.key')}'\n`);
  // The TLS-only database: plain connections to it are rejected, TLS ones authenticate as usual.
  const hba = join(c.dataDir, 'pg_hba.conf');
  writeFileSync(hba, `hostnossl ${DB} all 127.0.0.1/32 reject\nhostssl ${DB} all 127.0.0.1/32 scram-sha-256\n` + readFileSync(hba, 'utf8'));
  await c.stopPostgres();
  await c.startPostgres();
  const admin = await openDb(c.adminUrl());
  await admin.exec(`CREATE DATABASE ${DB}`);
  await admin.close();
}, 120_000);

afterAll(async () => c?.destroy());

describe('TLS to PostgreSQL', () => {
  it('connects with sslmode=verify-full and sslrootcert, encrypted, for queries and COPY', async () => {
    const db = await openDb(url('localhost', { sslmode: 'verify-full', sslrootcert: ca }));
    try {
      const r = await db.query<{ ssl: boolean; version: string }>('SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()');
      expect(r.rows[0]).toMatchObject({ ssl: true, version: expect.stringMatching(/^TLSv1\.[23]$/) });
      let bytes = '';
      await db.copyOut('COPY (SELECT g FROM generate_series(1, 3) g) TO STDOUT', new Writable({ write: (chunk: Buffer, _e, cb) => ((bytes += chunk.toString()), cb()) }));
      expect(bytes).toBe('1\n2\n3\n');
    } finally {
      await db.close();
    }
  });

  it('names the CA setting when the server certificate is signed by another CA', async () => {
    const msg = await connectError(url('localhost', { sslmode: 'verify-full', sslrootcert: otherCa }));
    expect(msg).toMatch(/^cannot connect to postgres:\/\/strata:\*\*\*@localhost:\d+\/strata_tls_only\?sslmode=verify-full&sslrootcert=.*: TLS to the database failed: .* — check sslrootcert \(the CA that signed the server's certificate\) and sslmode$/);
    expect(msg).not.toContain('strata-test-pw');
  });

  it('checks the host name with verify-full only: 127.0.0.1 is not in the certificate', async () => {
    expect(await connectError(url('127.0.0.1', { sslmode: 'verify-full', sslrootcert: ca }))).toMatch(/TLS to the database failed: .*127\.0\.0\.1.* — with sslmode=verify-full the server's certificate must name the host in the URL/);
    expect(await connectError(url('127.0.0.1', { sslmode: 'verify-ca', sslrootcert: ca }))).toBe('');
    // require with a root certificate checks the chain, as libpq does; without one it only encrypts.
    expect(await connectError(url('127.0.0.1', { sslmode: 'require', sslrootcert: otherCa }))).toMatch(/check sslrootcert/);
    expect(await connectError(url('127.0.0.1', { sslmode: 'require' }))).toBe('');
  });

  it('says the server wants TLS when the URL has none (a hostssl-only database)', async () => {
    expect(await connectError(url('127.0.0.1', { sslmode: 'disable' }))).toMatch(/pg_hba\.conf rejects connection .*no encryption — the server accepts only TLS connections here: set sslmode=verify-full and sslrootcert in the URL$/);
  });

  it('refuses a missing CA file, an unknown sslmode, and half a client certificate before connecting, naming the setting', () => {
    expect(() => pgConnection(url('localhost', { sslmode: 'verify-full', sslrootcert: '/nonexistent/ca.crt' }))).toThrow(
      "sslrootcert=/nonexistent/ca.crt: cannot read it (ENOENT); it names the PEM file of the CA that signed the server's certificate",
    );
    expect(() => pgConnection(url('localhost', { sslmode: 'verify_full' }))).toThrow('sslmode=verify_full: must be one of disable, allow, prefer, require, verify-ca, verify-full (verify-full in production)');
    expect(() => pgConnection(url('localhost', { sslmode: 'verify-full', sslcert: ca }))).toThrow('sslcert is set without sslkey: a client certificate needs both');
    // The parameters leave the URL the driver parses, so its own reading of them cannot override these.
    expect(pgConnection(url('localhost', { sslmode: 'verify-full', sslrootcert: ca })).connectionString).not.toMatch(/ssl/);
  });

  it('holds the job lock and listens for notifications over TLS too', async () => {
    const u = url('localhost', { sslmode: 'verify-full', sslrootcert: ca });
    const db = await openDb(u);
    try {
      const lock = await jobLocks(u, db)('strata.metrics');
      expect(lock).not.toBeNull();
      await lock!.verify();
      await lock!.release();
      const heard: string[] = [];
      const n = await db.listen('strata_tls_probe', { notify: (p) => heard.push(p), lost: () => {} });
      await db.query(`SELECT pg_notify('strata_tls_probe', 'over tls')`);
      await until('the notification', () => heard.includes('over tls'));
      await n.close();
    } finally {
      await db.close();
    }
  });
});
