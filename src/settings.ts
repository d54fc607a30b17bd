// Settings: every typed sub-configuration derived from the configuration (config.ts), here once, for
// the commands that run them: the gateway's options and its database pool, the migration's
// options, the worker's schedule and policy. Defaults and patterns are config.ts's and patterns.ts's;
// the archive's settings are checked by src/backup/archive/settings.ts.
import { join, resolve } from 'node:path';
import { listenAddress, type Config } from './config.ts';
import type { MigrateOptions } from './db/migrate.ts';
import type { OpenOptions } from './db/open.ts';
import type { PgliteDb } from './db/pglite.ts';
import type { Db } from './db/port.ts';
import type { GatewayOptions } from './ingest/gateway.ts';
import { policyFromConfig } from './jobs/policy.ts';
import type { Logger } from './log.ts';
import { parseWindow } from './tiering/window.ts';
import { parseSpan } from './units.ts';
import type { WorkerOptions } from './worker.ts';

export function gatewayOptions(config: Config, region: string): GatewayOptions {
  const { host, port } = listenAddress(config.listen);
  return {
    region,
    host,
    port,
    spoolDir: resolve(config.spoolDir ?? join(config.devDir, 'spool')),
    spoolMaxBytes: config.spoolMaxBytes,
    maxQueueBytes: config.maxQueueBytes,
    maxBodyBytes: config.maxBodyBytes,
    batchRows: config.batchRows,
    batchAgeMs: config.batchAgeMs,
    seriesLimit: config.seriesLimit,
    maxSeriesKeyBytes: config.seriesKeyMaxBytes,
    maxLineBytes: config.lineMaxBytes,
    timeWindow: { pastMs: parseSpan(config.timeMaxPast)!, futureMs: parseSpan(config.timeMaxFuture)!, pastText: config.timeMaxPast.trim(), futureText: config.timeMaxFuture.trim() },
    ledgerRetention: config.ledgerRetention,
    attemptTimeoutMs: config.writeTimeoutMs,
    maxAttempts: config.writeAttempts,
    writers: config.writers,
    ingestMode: config.ingestMode,
    metricsToken: config.metricsToken,
    ...(config.tlsCert && config.tlsKey
      ? { tls: { certFile: resolve(config.tlsCert), keyFile: resolve(config.tlsKey), caFile: config.tlsCa && resolve(config.tlsCa), minVersion: config.tlsMinVersion === '1.2' ? ('TLSv1.2' as const) : ('TLSv1.3' as const), allowPlain: config.tlsAllowPlain } }
      : {}),
    headersTimeoutMs: config.headersTimeoutMs,
    idleTimeoutMs: config.idleTimeoutMs,
    bodyIdleTimeoutMs: config.bodyIdleTimeoutMs,
    bodyMinBytesPerSecond: config.bodyMinBytesPerSecond,
    maxConnections: config.maxConnections,
  };
}

/**
 * The gateway's database pool: STRATA_WRITERS COPY connections plus two for the catalog (per
 * process, so PgBouncer's pool must allow processes × that). The statement ceiling only frees
 * connections PgBouncer holds while its server is down; the writer's own (adaptive) deadline decides
 * when a batch is retried or spooled.
 */
export function gatewayDbOptions(config: Config, log: Logger): OpenOptions {
  return { logger: log, max: config.writers + 2, applicationName: 'strata-gateway', queryTimeoutMs: Math.max(30_000, 2 * config.writeTimeoutMs), ...(config.notifyDatabaseUrl ? { listenUrl: config.notifyDatabaseUrl } : {}) };
}

/** `strata migrate` (and `strata dev`'s migration): the chunk interval, the rollup's reach and the tablespaces the worker uses. */
export function migrateOptions(config: Config, log: Logger): MigrateOptions {
  return { chunkInterval: config.chunkInterval, archiveAfter: config.archiveAfter, warmTablespace: config.warmTablespace, coldTablespace: config.coldTablespace, logger: log };
}

/** The warm and cold tablespaces on an embedded database, which keeps them as directories of its own (`strata dev`, `strata migrate` on a `pglite:` URL); a server's are made by its administrator and checked by migrate. */
export async function ensureEmbeddedTablespaces(db: Db, config: Config): Promise<void> {
  if (db.kind !== 'pglite') return;
  for (const t of [config.warmTablespace, config.coldTablespace]) await (db as PgliteDb).ensureTablespace(t);
}

/** The worker's policy, schedule, lock timeout, window and listen address (its archive and locks are the command's). */
export function workerOptions(config: Config): Pick<WorkerOptions, 'policy' | 'schedule' | 'lockTimeoutMs' | 'host' | 'port' | 'window'> {
  const window = config.tierWindow ? parseWindow(config.tierWindow) : undefined;
  return { policy: policyFromConfig(config), schedule: config.tierSchedule, lockTimeoutMs: config.tierLockTimeoutMs, ...listenAddress(config.workerListen), ...(window ? { window } : {}) };
}
