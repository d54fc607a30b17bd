// `strata dev`: everything on one machine with no setup — an embedded TimescaleDB (PGlite) under
// the dev directory with warm and cold tablespaces, migrated, a demo facility, and the ingest
// gateway in front of it. Prints a curl example and a Telegraf snippet that work as printed.
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { Config } from './config.ts';
import { migrate } from './db/migrate.ts';
import { openPglite } from './db/pglite.ts';
import type { Db } from './db/port.ts';
import { addFacility } from './facilities/registry.ts';
import { newToken, tokenHash } from './facilities/secrets.ts';
import { DEV_REGION, startLocalS3 } from './backup/archive/local-s3.ts';
import { listenAddress } from './config.ts';
import { startGateway, type Gateway } from './ingest/gateway.ts';
import { startWorker, type Worker } from './worker.ts';
import type { Logger } from './log.ts';
import { reloadTlsOnSighup, runGateway } from './serve.ts';
import { ensureEmbeddedTablespaces, gatewayOptions, migrateOptions, workerOptions } from './settings.ts';
import { untilSignal } from './signals.ts';
import { serveCommands, type CommandRunner, type CommandSocket } from './dev-socket.ts';
import { formatStatus, readStatus } from './status.ts';

const DEMO = 'demo';

/** The demo facility's token, kept in the dev directory (mode 0600) so it survives restarts. */
async function demoToken(db: Db, dir: string, region: string): Promise<string> {
  const file = join(dir, 'demo-token');
  const existing = await db.query<{ id: number }>('SELECT id FROM strata.facilities WHERE code = $1', [DEMO]);
  if (existing.rows.length === 0) {
    const created = await addFacility(db, { code: DEMO, region, name: 'Demo facility (strata dev)' });
    writeFileSync(file, created.token + '\n', { mode: 0o600 });
    return created.token;
  }
  // The demo facility follows the dev region, so changing STRATA_REGION never locks it out.
  await db.query('UPDATE strata.facilities SET region = $1 WHERE code = $2 AND region <> $1', [region, DEMO]);
  if (existsSync(file)) return readFileSync(file, 'utf8').trim();
  // The catalog keeps only a hash: a lost token file means a new token.
  const token = newToken();
  await db.query('UPDATE strata.facilities SET token_hash = $1 WHERE code = $2', [tokenHash(token), DEMO]);
  writeFileSync(file, token + '\n', { mode: 0o600 });
  return token;
}

/** With TLS: the gateway's certificate (clients trust it, or the CA that signed it) and the client CA, if any. */
export interface DevTls {
  certFile: string;
  clientCaFile?: string | undefined;
}

export function devInstructions(url: string, token: string, metricsToken: string, tls?: DevTls): string {
  // curl checks the gateway's certificate against the file it is given; with a client CA it presents its own.
  const curlTls = tls ? ` --cacert ${tls.certFile}${tls.clientCaFile ? ' --cert client.pem --key client-key.pem' : ''}` : '';
  return [
    `gateway: ${url}  (health: ${url}/health)`,
    `metrics: curl${curlTls} -H 'Authorization: Bearer ${metricsToken}' ${url}/metrics`,
    '',
    'send a point:',
    `  curl${curlTls} -i -XPOST '${url}/api/v2/write?precision=s' -H 'Authorization: Token ${token}' --data-binary 'press,line=3 temp=71.5,running=true'`,
    '',
    'Telegraf (outputs.influxdb_v2):',
    '  [[outputs.influxdb_v2]]',
    `    urls = ["${url}"]`,
    `    token = "${token}"`,
    '    organization = "strata"',
    '    bucket = "metrics"',
    ...(tls
      ? [
          `    tls_ca = "${tls.certFile}"  # the gateway's certificate, or the CA that signed it`,
          ...(tls.clientCaFile ? [`    tls_cert = "client.pem"  # a client certificate signed by ${tls.clientCaFile} (STRATA_TLS_CA)`, '    tls_key = "client-key.pem"'] : []),
          '    # insecure_skip_verify = true  skips checking the gateway\'s certificate: a first test only, never in production',
        ]
      : []),
    '',
    'stop with Ctrl-C (pending rows are flushed first)',
  ].join('\n');
}

/**
 * `commands` (from the command line) runs the read-only commands that other processes forward to
 * this one while it holds the data directory (src/dev-socket.ts).
 */
export async function runDev(config: Config, log: Logger, out: (text: string) => void, commands?: CommandRunner): Promise<void> {
  const dir = resolve(config.devDir);
  mkdirSync(dir, { recursive: true });
  const url = `pglite:${join(dir, 'pgdata')}`;
  out(`strata dev: embedded TimescaleDB in ${dir}`);
  const db = await openPglite(url);
  try {
    await ensureEmbeddedTablespaces(db, config);
    const result = await migrate(db, migrateOptions(config, log));
    out(result.applied.length ? `applied ${result.applied.length} migrations` : 'schema up to date');
    const region = config.region ?? DEV_REGION;
    const token = await demoToken(db, dir, region);
    out(formatStatus(await readStatus(db)));
    const signal = untilSignal(log);
    const s3 = await startLocalS3({ ...config, region }, join(dir, 's3'), listenAddress(config.devS3Listen));
    let gateway: Gateway | undefined;
    const stopReloading = reloadTlsOnSighup(config, () => gateway, log);
    let worker: Worker | undefined;
    let socket: CommandSocket | undefined;
    try {
      if (commands && db.lock) {
        socket = await serveCommands(resolve(dir, 'pgdata'), db, commands, log);
        db.lock.update({ socket: socket.path });
      }
      const w = await startWorker(db, log, { ...workerOptions(config), archive: s3.settings });
      worker = w;
      // /metrics names facilities: behind a token here too (STRATA_METRICS_TOKEN, else one for this run).
      const metricsToken = config.metricsToken ?? newToken();
      const options = gatewayOptions({ ...config, spoolDir: config.spoolDir ?? join(dir, 'spool') }, region);
      const g = await startGateway(db, log, { ...options, metricsToken, replayIntervalMs: 1_000 });
      gateway = g;
      out('');
      out(`local S3: ${s3.endpoint} (bucket ${s3.settings.bucket}, files in ${join(dir, 's3')})`);
      out(`worker: tiering then archive on "${config.tierSchedule}" (UTC); metrics: ${w.url}/metrics`);
      out('');
      out(devInstructions(g.url, token, metricsToken, options.tls && { certFile: options.tls.certFile, clientCaFile: options.tls.caFile }));
      await runGateway(db, g, log, signal, async () => {
        worker = undefined;
        await w.stop();
        // Commands still running finish before the database closes.
        const s = socket;
        socket = undefined;
        await s?.close();
      });
    } catch (err) {
      await worker?.stop().catch(() => {});
      await socket?.close().catch(() => {});
      throw err;
    } finally {
      stopReloading();
      await s3.stop();
    }
  } catch (err) {
    await db.close().catch(() => {});
    throw err;
  }
}
