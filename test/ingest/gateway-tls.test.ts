// TLS on the gateway: certificates from a CA this test makes (openssl), TLS 1.3 by default and 1.2 on
// request, plain HTTP refused (or allowed), client certificates, reloads that leave open connections
// alone (in-process and by SIGHUP to `strata serve`, one process and several), and errors naming the
// setting and file.
import { spawn } from 'node:child_process';
import { copyFileSync, readFileSync as readFile, writeFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { Agent, request } from 'node:https';
import { connect as netConnect } from 'node:net';
import { join } from 'node:path';
import { connect, type ConnectionOptions } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.ts';
import { openDb } from '../../src/db/open.ts';
import type { Db } from '../../src/db/port.ts';
import { devInstructions } from '../../src/dev.ts';
import type { Gateway } from '../../src/ingest/gateway.ts';
import { loadTls, type TlsSettings } from '../../src/ingest/tls.ts';
import { gatewayOptions } from '../../src/settings.ts';
import { issue, makeCa, type CertFiles } from '../support/certificates.ts';
import { freePort } from '../support/cluster.ts';
import { cluster, createDatabase, type TestDatabase } from '../support/databases.ts';
import { METRICS_TOKEN, count, facility, gateway, plainSchema, tempDir } from '../support/gateway.ts';
import { until } from '../support/wait.ts';

const BIN = join(import.meta.dirname, '../../bin/strata.js');

let t: TestDatabase;
let db: Db;
let token = '';
let facilityId = 0;
let dir = '';
let ca: CertFiles;
let server: CertFiles;
let renewed: CertFiles;
let clientCa: CertFiles;
let client: CertFiles;
let stranger: CertFiles;

beforeAll(async () => {
  dir = tempDir('strata-tls-');
  ca = makeCa(dir, 'ca', 'Strata test CA');
  server = issue(dir, ca, 'server', 'localhost', 'DNS:localhost,IP:127.0.0.1');
  renewed = issue(dir, ca, 'renewed', 'localhost', 'DNS:localhost,IP:127.0.0.1');
  clientCa = makeCa(dir, 'clients', 'Strata collectors CA');
  client = issue(dir, clientCa, 'collector', 'collector-1');
  stranger = issue(dir, ca, 'stranger', 'collector-2');
  t = await createDatabase(cluster().adminUrl(), 'strata_gw_tls');
  db = await openDb(t.url, { max: 8 });
  await plainSchema(db);
  ({ token, id: facilityId } = await facility(db, 'kiln'));
}, 120_000);

afterAll(async () => {
  await db?.close();
  await t?.drop();
});

const settings = (o: Partial<TlsSettings> = {}): TlsSettings => ({ certFile: server.crt, keyFile: server.key, minVersion: 'TLSv1.3', allowPlain: false, ...o });
const portOf = (g: Gateway) => Number(new URL(g.url).port);

/** A TLS handshake alone: the protocol and the certificate the gateway served, or the error. */
function handshake(port: number, o: ConnectionOptions = {}): Promise<{ protocol: string; fingerprint: string } | { error: string }> {
  return new Promise((resolve) => {
    const s = connect({ host: '127.0.0.1', port, servername: 'localhost', ca: readCa(), ...o }, () => {
      const r = { protocol: s.getProtocol() ?? '', fingerprint: s.getPeerX509Certificate()?.fingerprint256 ?? '' };
      s.end();
      resolve(r);
    });
    s.once('error', (err: NodeJS.ErrnoException) => resolve({ error: `${err.code ?? ''} ${err.message}` }));
  });
}
const readCa = () => readFile(ca.crt);

/** POST /write over HTTPS; the status and body, or the error. */
function write(port: number, lines: string, o: { agent?: Agent; tls?: ConnectionOptions } = {}): Promise<{ status: number; body: string; localPort: number } | { error: string }> {
  return new Promise((resolve) => {
    const req = request(
      { host: '127.0.0.1', port, servername: 'localhost', path: '/write', method: 'POST', headers: { Authorization: `Token ${token}` }, ca: readCa(), ...(o.agent ? { agent: o.agent } : { agent: false }), ...o.tls },
      (res) => {
        const localPort = res.socket.localPort ?? 0;
        let body = '';
        res.on('data', (d: Buffer) => (body += d.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body, localPort }));
      },
    );
    req.once('error', (err: NodeJS.ErrnoException) => resolve({ error: `${err.code ?? ''} ${err.message}` }));
    req.end(lines);
  });
}

/** A request in plain HTTP to the TLS port. */
function plainWrite(port: number, lines: string): Promise<{ status: number; body: string; closed: boolean } | { error: string }> {
  return new Promise((resolve) => {
    const req = httpRequest({ host: '127.0.0.1', port, path: '/write', method: 'POST', headers: { Authorization: `Token ${token}` }, agent: false }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, closed: res.headers.connection === 'close' }));
    });
    req.once('error', (err: NodeJS.ErrnoException) => resolve({ error: `${err.code ?? ''} ${err.message}` }));
    req.end(lines);
  });
}

const cuts = async (g: Gateway, reason: string) => ((await g.metrics.connectionsCut.get()).values.find((v) => v.labels.reason === reason)?.value ?? 0);
const rows = () => count(db, `facility_id = ${facilityId}`);
let seq = 0;
const line = () => `kiln,zone=${seq % 3} temp=${++seq} ${1_700_000_000_000_000_000n + BigInt(seq) * 1_000_000_000n}`;

describe('TLS on the gateway', () => {
  it('speaks TLS 1.3 and takes writes over it; a TLS 1.2 client is refused by default and accepted when 1.2 is allowed', async () => {
    const g = await gateway(db, { tls: settings() });
    try {
      expect(g.url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
      const port = portOf(g);
      expect(await handshake(port)).toMatchObject({ protocol: 'TLSv1.3' });
      const before = await rows();
      expect(await write(port, line())).toMatchObject({ status: 204 });
      expect(await rows()).toBe(before + 1);
      const old = await handshake(port, { maxVersion: 'TLSv1.2' });
      expect(old).toMatchObject({ error: expect.stringMatching(/protocol|version/i) });
      await until('the refused handshake to be counted', async () => (await cuts(g, 'tls')) >= 1);
    } finally {
      await g.stop();
    }
    const lenient = await gateway(db, { tls: settings({ minVersion: 'TLSv1.2' }) });
    try {
      expect(await handshake(portOf(lenient), { maxVersion: 'TLSv1.2' })).toMatchObject({ protocol: 'TLSv1.2' });
      expect(await write(portOf(lenient), line(), { tls: { maxVersion: 'TLSv1.2' } })).toMatchObject({ status: 204 });
      expect(await handshake(portOf(lenient))).toMatchObject({ protocol: 'TLSv1.3' });
    } finally {
      await lenient.stop();
    }
  });

  it('answers plain HTTP on the TLS port with 400 saying to use https, writing nothing; with allowPlain it serves both', async () => {
    const g = await gateway(db, { tls: settings(), headersTimeoutMs: 500 });
    try {
      const before = await rows();
      const r = await plainWrite(portOf(g), line());
      expect(r).toMatchObject({ status: 400, closed: true });
      expect((r as { body: string }).body).toContain('this port speaks HTTPS only: send to https://');
      expect(await rows()).toBe(before);
      expect(await cuts(g, 'plain_http')).toBe(1);
      // A connection that never says anything is closed within the headers deadline.
      const silent = netConnect({ host: '127.0.0.1', port: portOf(g) });
      await new Promise((r) => silent.once('close', r));
      expect(await cuts(g, 'idle_first')).toBe(1);
    } finally {
      await g.stop();
    }
    const both = await gateway(db, { tls: settings({ allowPlain: true }) });
    try {
      const before = await rows();
      // Keep-alive across several requests on each kind of connection.
      const agent = new Agent({ keepAlive: true, maxSockets: 1 });
      for (let i = 0; i < 3; i++) {
        expect(await plainWrite(portOf(both), line())).toMatchObject({ status: 204 });
        expect(await write(portOf(both), line(), { agent })).toMatchObject({ status: 204 });
      }
      agent.destroy();
      expect(await rows()).toBe(before + 6);
    } finally {
      await both.stop();
    }
  });

  it('reloads its certificate for new connections while a keep-alive client goes on writing on its open one', async () => {
    const certFile = join(dir, 'live.crt');
    const keyFile = join(dir, 'live.key');
    copyFileSync(server.crt, certFile);
    copyFileSync(server.key, keyFile);
    const g = await gateway(db, { tls: settings({ certFile, keyFile }) });
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    try {
      const port = portOf(g);
      const first = await handshake(port);
      expect(first).toMatchObject({ fingerprint: g.tls!.fingerprint256 });
      const before = await rows();
      let running = true;
      let sent = 0;
      const failures: string[] = [];
      const ports = new Set<number>();
      const writer = (async () => {
        while (running) {
          const r = await write(port, line(), { agent });
          if ('error' in r || r.status !== 204) failures.push(JSON.stringify(r));
          else ports.add(r.localPort);
          sent++;
        }
      })();
      await until('the client to be writing', () => sent >= 5);
      // An unusable new file: the reload fails naming it, and the old certificate stays served.
      writeFileSync(certFile, 'not a certificate\n');
      expect(() => g.reloadTls()).toThrow(`STRATA_TLS_CERT=${certFile}: not a PEM file`);
      expect(await handshake(port)).toMatchObject({ fingerprint: (first as { fingerprint: string }).fingerprint });
      copyFileSync(renewed.crt, certFile);
      copyFileSync(renewed.key, keyFile);
      const next = g.reloadTls();
      const atReload = sent;
      expect(await handshake(port)).toMatchObject({ fingerprint: next.fingerprint256 });
      expect(next.fingerprint256).not.toBe((first as { fingerprint: string }).fingerprint);
      await until('the client to write on after the reload', () => sent >= atReload + 10);
      running = false;
      await writer;
      expect(failures).toEqual([]);
      expect(ports.size).toBe(1); // one connection throughout: the reload dropped nothing
      expect(await rows()).toBe(before + sent);
    } finally {
      agent.destroy();
      await g.stop();
    }
  });

  it('with STRATA_TLS_CA asks for a client certificate that CA signed', async () => {
    const g = await gateway(db, { tls: settings({ caFile: clientCa.crt }) });
    try {
      const port = portOf(g);
      expect(await write(port, line(), { tls: { cert: readFile(client.crt), key: readFile(client.key) } })).toMatchObject({ status: 204 });
      expect(await write(port, line())).toMatchObject({ error: expect.stringMatching(/certificate|socket hang up|ECONNRESET/i) });
      expect(await write(port, line(), { tls: { cert: readFile(stranger.crt), key: readFile(stranger.key) } })).toMatchObject({ error: expect.stringMatching(/certificate|unknown ca|socket hang up|ECONNRESET/i) });
      await until('the refused handshakes to be counted', async () => (await cuts(g, 'tls')) >= 2);
    } finally {
      await g.stop();
    }
  });

  it('refuses unusable files at start, naming the setting and the file', async () => {
    const missing = join(dir, 'missing.crt');
    expect(() => loadTls(settings({ certFile: missing }))).toThrow(`STRATA_TLS_CERT=${missing}: cannot read the certificate (no such file)`);
    const garbage = join(dir, 'garbage.pem');
    writeFileSync(garbage, '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n');
    expect(() => loadTls(settings({ certFile: garbage }))).toThrow(`STRATA_TLS_CERT=${garbage}: not a certificate`);
    expect(() => loadTls(settings({ keyFile: renewed.key }))).toThrow(`STRATA_TLS_KEY=${renewed.key} is not the key of the certificate in STRATA_TLS_CERT=${server.crt}`);
    expect(() => loadTls(settings({ caFile: server.key }))).toThrow(`STRATA_TLS_CA=${server.key}: not a certificate`);
    expect(() => loadTls(settings(), new Date(Date.now() + 30 * 86_400_000))).toThrow(`STRATA_TLS_CERT=${server.crt}: the certificate expired on`);
    // The gateway does not start, and leaves its spool directory unlocked for the next attempt.
    const spoolDir = tempDir();
    await expect(gateway(db, { spoolDir, tls: settings({ keyFile: missing }) })).rejects.toThrow(`STRATA_TLS_KEY=${missing}: cannot read the private key (no such file)`);
    const g = await gateway(db, { spoolDir, tls: settings() });
    await g.stop();
  });

  it('is configured by STRATA_TLS_* (both files or neither), and strata dev prints a snippet that trusts the certificate', () => {
    const env = { STRATA_TLS_CERT: server.crt, STRATA_TLS_KEY: server.key, STRATA_TLS_MIN_VERSION: '1.2', STRATA_TLS_ALLOW_PLAIN: '1' };
    expect(gatewayOptions(loadConfig({ env }), 'test-1').tls).toEqual({ certFile: server.crt, keyFile: server.key, caFile: undefined, minVersion: 'TLSv1.2', allowPlain: true });
    expect(gatewayOptions(loadConfig({ env: {} }), 'test-1').tls).toBeUndefined();
    expect(() => loadConfig({ env: { STRATA_TLS_KEY: server.key } })).toThrow('needs STRATA_TLS_CERT too');
    expect(() => loadConfig({ env: { STRATA_TLS_CERT: server.crt } })).toThrow('needs STRATA_TLS_KEY too');
    expect(() => loadConfig({ env: { STRATA_TLS_CA: clientCa.crt } })).toThrow('STRATA_TLS_CA');
    expect(() => loadConfig({ env: { ...env, STRATA_TLS_MIN_VERSION: '1.1' } })).toThrow('STRATA_TLS_MIN_VERSION="1.1": must be 1.3 (the default) or 1.2');
    const text = devInstructions('https://127.0.0.1:8086', 'tok', METRICS_TOKEN, { certFile: server.crt });
    expect(text).toContain(`tls_ca = "${server.crt}"`);
    expect(text).toContain('# insecure_skip_verify = true');
    expect(text).toContain(`curl --cacert ${server.crt} -i -XPOST 'https://127.0.0.1:8086/api/v2/write`);
    expect(devInstructions('http://127.0.0.1:8086', 'tok', METRICS_TOKEN)).not.toContain('tls_ca');
  });
});

describe('SIGHUP to strata serve', () => {
  for (const processes of ['1', '2']) {
    it(`reads the TLS files again in every gateway process (--processes ${processes})`, async () => {
      const port = await freePort();
      const certFile = join(dir, `serve-${processes}.crt`);
      const keyFile = join(dir, `serve-${processes}.key`);
      copyFileSync(server.crt, certFile);
      copyFileSync(server.key, keyFile);
      const env = {
        ...process.env,
        STRATA_DATABASE_URL: t.url,
        STRATA_REGION: 'test-1',
        STRATA_LISTEN: `127.0.0.1:${port}`,
        STRATA_SPOOL_DIR: tempDir(),
        STRATA_WRITERS: '2',
        STRATA_TLS_CERT: certFile,
        STRATA_TLS_KEY: keyFile,
        STRATA_LOG_LEVEL: 'info',
      };
      const child = spawn(process.execPath, [BIN, 'serve', '--processes', processes], { env, stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      let err = '';
      child.stdout.on('data', (d: Buffer) => (out += d.toString()));
      child.stderr.on('data', (d: Buffer) => (err += d.toString()));
      const exit = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
      try {
        await until('strata serve to announce itself', () => /^strata serve: .*listening on https:\/\//m.test(out) || child.exitCode !== null, 120_000);
        expect(child.exitCode, err).toBeNull();
        const fingerprint = async () => ((await handshake(port)) as { fingerprint?: string }).fingerprint;
        const old = loadTls(settings()).fingerprint256;
        const fresh = loadTls(settings({ certFile: renewed.crt, keyFile: renewed.key })).fingerprint256;
        expect(await fingerprint()).toBe(old);
        // A broken file first: every process says why and keeps serving the certificate it has.
        writeFileSync(keyFile, 'not a key\n');
        child.kill('SIGHUP');
        await until('every process to report the failed reload', () => err.split('TLS reload failed: still serving the previous certificate').length - 1 >= Number(processes));
        expect(err).toContain(`STRATA_TLS_KEY=${keyFile}: not a PEM file`);
        for (let i = 0; i < 4; i++) expect(await fingerprint()).toBe(old);
        copyFileSync(renewed.crt, certFile);
        copyFileSync(renewed.key, keyFile);
        child.kill('SIGHUP');
        // Connections go to either process: every one of eight in a row must see the new certificate.
        await until('every gateway process to serve the new certificate', async () => {
          for (let i = 0; i < 8; i++) if ((await fingerprint()) !== fresh) return false;
          return true;
        });
        expect(await write(port, line())).toMatchObject({ status: 204 });
        expect(child.exitCode).toBeNull();
        expect(err).toContain('TLS certificate reloaded');
      } finally {
        child.kill('SIGTERM');
      }
      expect(await exit).toBe(0);
    });
  }
});
