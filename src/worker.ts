// `strata worker`: the scheduled jobs. Tiering runs on STRATA_TIER_SCHEDULE (node-cron, no overlap),
// then the archive when it is configured (STRATA_ARCHIVE_BUCKETS); several replicas are safe because
// each job takes the hypertable's session lock first and a replica that finds it held does nothing.
// TimescaleDB's own compression or retention policies on the hypertable would race with the jobs:
// they are reported at start and before every run.
// Metrics and health on STRATA_WORKER_LISTEN (/metrics, /health). Above tiering/, never below it.
import { createServer, type Server } from 'node:http';
import cron from 'node-cron';
import { Registry, collectDefaultMetrics } from 'prom-client';
import { listenAddress, requireSetting, type Config } from './config.ts';
import { openDb } from './db/open.ts';
import type { Db } from './db/port.ts';
import { ConfigError } from './errors.ts';
import type { Logger } from './log.ts';
import { runArchive, type ArchiveSummary } from './backup/job.ts';
import { createArchiveMetrics } from './backup/metrics.ts';
import { ArchiveStore } from './backup/s3.ts';
import { archiveSettings, type ArchiveSettings } from './backup/settings.ts';
import { racingPolicyWarnings } from './tiering/catalog.ts';
import { runTiering, type RunSummary } from './tiering/job.ts';
import { createTierMetrics } from './tiering/metrics.ts';
import { policyFromConfig, type TierPolicy } from './tiering/policy.ts';
import { inWindow, parseWindow, type MaintenanceWindow } from './tiering/window.ts';
import { untilSignal } from './serve.ts';

export interface WorkerOptions {
  policy: TierPolicy;
  /** A cron expression (5 or 6 fields), UTC. */
  schedule: string;
  window?: MaintenanceWindow;
  lockTimeoutMs: number;
  /** Archive after each tiering run (into this region's bucket); none when unset. */
  archive?: ArchiveSettings;
  host: string;
  port: number;
  defaultMetrics?: boolean;
}

export interface Worker {
  readonly url: string;
  readonly registry: Registry;
  /** Runs the scheduled jobs now (as the schedule would): tiering, then the archive. */
  runNow(): Promise<{ tiering: RunSummary | null; archive: ArchiveSummary | null }>;
  stop(): Promise<void>;
}

export function checkSchedule(expression: string): void {
  const v = cron.validateDetailed(expression);
  if (!v.valid) throw new ConfigError([`STRATA_TIER_SCHEDULE="${expression}": not a cron expression (${v.errors.map((e) => `${e.field}: ${e.message}`).join('; ')})`]);
}

export async function startWorker(db: Db, log: Logger, o: WorkerOptions): Promise<Worker> {
  checkSchedule(o.schedule);
  const registry = new Registry();
  if (o.defaultMetrics !== false) collectDefaultMetrics({ register: registry, prefix: 'strata_worker_' });
  const metrics = createTierMetrics(registry);
  const archiveMetrics = createArchiveMetrics(registry);
  const store = o.archive ? new ArchiveStore(o.archive) : null;
  let running: Promise<{ tiering: RunSummary | null; archive: ArchiveSummary | null }> | null = null;

  const reportRaces = async () => {
    for (const w of await racingPolicyWarnings(db)) log.warn(w);
  };
  const tiering = async (): Promise<RunSummary | null> => {
    try {
      await reportRaces();
      return await runTiering(db, log, { policy: o.policy, lockTimeoutMs: o.lockTimeoutMs, metrics, ...(o.window ? { window: o.window } : {}) });
    } catch (err) {
      metrics.stepFailures.inc({ step: 'run' });
      log.error('tiering run failed', { error: err });
      return null;
    }
  };
  const archive = async (): Promise<ArchiveSummary | null> => {
    if (!store || !o.archive) return null;
    if (o.window && !inWindow(o.window, new Date())) return null; // the window bounds both jobs
    try {
      return await runArchive(db, store, log, { settings: o.archive, policy: o.policy, lockTimeoutMs: o.lockTimeoutMs, metrics: archiveMetrics });
    } catch (err) {
      archiveMetrics.failures.inc({ step: 'run' });
      log.error('archive run failed', { error: err });
      return null;
    }
  };
  const runNow = () => (running ??= (async () => ({ tiering: await tiering(), archive: await archive() }))().finally(() => (running = null)));

  await reportRaces().catch((err) => log.warn('cannot read the hypertable\'s TimescaleDB policies yet', { error: err }));
  const task = cron.schedule(o.schedule, () => runNow(), { name: 'strata-tiering', noOverlap: true, timezone: 'Etc/UTC' });

  const server: Server = createServer((req, res) => {
    if (req.url === '/metrics') {
      registry.metrics().then(
        (text) => res.writeHead(200, { 'Content-Type': registry.contentType }).end(text),
        (err) => res.writeHead(500).end(String(err)),
      );
    } else if (req.url === '/health') res.writeHead(200, { 'Content-Type': 'application/json' }).end(JSON.stringify({ status: 'ok', nextRun: task.getNextRun() }));
    else res.writeHead(404).end();
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(o.port, o.host, () => resolve());
  });
  const addr = server.address();
  const url = `http://${o.host.includes(':') ? `[${o.host}]` : o.host}:${typeof addr === 'object' && addr ? addr.port : o.port}`;
  log.info('worker started', { schedule: o.schedule, nextRun: task.getNextRun(), metrics: `${url}/metrics`, archive: o.archive ? `s3://${o.archive.bucket}` : 'not configured (STRATA_ARCHIVE_BUCKETS)' });
  return {
    url,
    registry,
    runNow,
    async stop() {
      await task.destroy();
      await running;
      store?.close();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

/** `strata worker`: until SIGTERM/SIGINT; a run in progress finishes its current step first. */
export async function runWorker(config: Config, log: Logger, out: (t: string) => void): Promise<void> {
  const url = requireSetting(config, 'adminDatabaseUrl', 'for strata worker (a direct connection to the primary, not through PgBouncer: the jobs hold a session lock)');
  checkSchedule(config.tierSchedule);
  const policy = policyFromConfig(config);
  const window = config.tierWindow ? parseWindow(config.tierWindow) : undefined;
  const archive = config.archiveBuckets ? archiveSettings(config) : undefined;
  const db = await openDb(url, { logger: log, max: 1, applicationName: 'strata-worker' });
  try {
    const signal = untilSignal(log);
    const { host, port } = listenAddress(config.workerListen);
    const w = await startWorker(db, log, { policy, schedule: config.tierSchedule, lockTimeoutMs: config.tierLockTimeoutMs, host, port, ...(window ? { window } : {}), ...(archive ? { archive } : {}) });
    out(`strata worker: tiering${archive ? ` then archive to s3://${archive.bucket}` : ''} on "${config.tierSchedule}" (UTC)${window ? ` within ${window.text}` : ''}; metrics on ${w.url}/metrics`);
    await signal;
    await w.stop();
  } finally {
    await db.close();
  }
}
