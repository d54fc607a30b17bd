// `strata worker`: the scheduled jobs. Tiering runs on STRATA_TIER_SCHEDULE (node-cron, no overlap),
// then the archive when it is configured (STRATA_ARCHIVE_BUCKETS); several replicas are safe because
// each job takes the hypertable's session lock first and a replica that finds it held does nothing.
// TimescaleDB's own compression or retention policies on the hypertable would race with the jobs:
// they are reported at start and before every run.
// Metrics and health on STRATA_WORKER_LISTEN (/metrics, /health). Above tiering/, never below it.
// SIGTERM/SIGINT: the run in progress stops after its current step (journaled, nothing left
// running) and the worker exits 0; a second signal exits at once. A run whose job lock was lost
// (its session ended: failover, backend terminated) stops and is logged; the schedule carries on.
import { createServer, type Server } from 'node:http';
import cron from 'node-cron';
import { Registry, collectDefaultMetrics } from 'prom-client';
import { requireSetting, type Config } from './config.ts';
import { workerOptions } from './settings.ts';
import { openDb } from './db/open.ts';
import type { Db } from './db/port.ts';
import { ConfigError } from './errors.ts';
import type { Logger } from './log.ts';
import { runArchive, type ArchiveSummary } from './backup/archive/job.ts';
import { createArchiveMetrics } from './backup/archive/metrics.ts';
import { ArchiveStore } from './backup/archive/s3.ts';
import { archiveSettings, type ArchiveSettings } from './backup/archive/settings.ts';
import { racingPolicyWarnings } from './jobs/chunks.ts';
import { runTiering, type RunSummary } from './tiering/job.ts';
import { createTierMetrics } from './tiering/metrics.ts';
import type { TierPolicy } from './jobs/policy.ts';
import { inWindow, type MaintenanceWindow } from './tiering/window.ts';
import type { LockSource } from './jobs/lock.ts';
import { jobLocks } from './jobs/lock.ts';
import { stopOnSignals } from './signals.ts';

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
  /** Where the jobs take the hypertable's lock (default: on `db`'s own session). */
  locks?: LockSource;
}

export interface Worker {
  readonly url: string;
  readonly registry: Registry;
  /** Runs the scheduled jobs now (as the schedule would): tiering, then the archive. */
  runNow(): Promise<{ tiering: RunSummary | null; archive: ArchiveSummary | null }>;
  /** Stops the schedule; a run in progress stops after its current step (`reason`: why, e.g. the signal). */
  stop(reason?: unknown): Promise<void>;
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
  const stopping = new AbortController();
  const signal = stopping.signal;
  const locks = o.locks ? { locks: o.locks } : {};
  const lockLost = (job: string, runId: string, reason: string | null) =>
    log.error(`${job} run ${runId} lost the job lock (${reason}); it stopped, and the next scheduled run continues from the catalog`, { runId });

  const reportRaces = async () => {
    for (const w of await racingPolicyWarnings(db)) log.warn(w);
  };
  const tiering = async (): Promise<RunSummary | null> => {
    try {
      await reportRaces();
      const r = await runTiering(db, log, { policy: o.policy, lockTimeoutMs: o.lockTimeoutMs, metrics, signal, ...locks, ...(o.window ? { window: o.window } : {}) });
      if (r.stopped === 'lock-lost') lockLost('tiering', r.runId, r.stoppedBy);
      return r;
    } catch (err) {
      metrics.stepFailures.inc({ step: 'run' });
      log.error('tiering run failed', { error: err });
      return null;
    }
  };
  const archive = async (): Promise<ArchiveSummary | null> => {
    if (!store || !o.archive) return null;
    if (o.window && !inWindow(o.window, new Date())) return null; // the window bounds both jobs
    if (signal.aborted) return null;
    try {
      const r = await runArchive(db, store, log, { settings: o.archive, policy: o.policy, lockTimeoutMs: o.lockTimeoutMs, metrics: archiveMetrics, signal, ...locks });
      if (r.stopped === 'lock-lost') lockLost('archive', r.runId, r.stoppedBy);
      return r;
    } catch (err) {
      archiveMetrics.failures.inc({ step: 'run' });
      log.error('archive run failed', { error: err });
      return null;
    }
  };
  const runNow = () => (running ??= (async () => {
    if (signal.aborted) return { tiering: null, archive: null };
    return { tiering: await tiering(), archive: await archive() };
  })().finally(() => (running = null)));

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
    async stop(reason?: unknown) {
      await task.destroy();
      stopping.abort(reason ?? new Error('the worker is stopping'));
      await running;
      store?.close();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

/** `strata worker`: until SIGTERM/SIGINT; a run in progress stops after its current step, then it exits 0. */
export async function runWorker(config: Config, log: Logger, out: (t: string) => void): Promise<void> {
  const url = requireSetting(config, 'adminDatabaseUrl', 'for strata worker (a direct connection to the primary, not through PgBouncer: the jobs hold a session lock)');
  checkSchedule(config.tierSchedule);
  const options = workerOptions(config);
  const window = options.window;
  const archive = config.archiveBuckets ? archiveSettings(config) : undefined;
  // Signals are taken before the worker announces itself, so one sent right after is never missed.
  const signals = stopOnSignals({ log, what: 'the worker stops after the current step of its run' });
  const db = await openDb(url, { logger: log, max: 1, applicationName: 'strata-worker' });
  try {
    // The job lock on a dedicated connection of its own (the jobs' statements run on `db`).
    const w = await startWorker(db, log, { ...options, locks: jobLocks(url, db), ...(archive ? { archive } : {}) });
    out(`strata worker: tiering${archive ? ` then archive to s3://${archive.bucket}` : ''} on "${config.tierSchedule}" (UTC)${window ? ` within ${window.text}` : ''}; metrics on ${w.url}/metrics`);
    await new Promise<void>((resolve) => (signals.signal.aborted ? resolve() : signals.signal.addEventListener('abort', () => resolve(), { once: true })));
    await w.stop(signals.signal.reason);
    log.info('worker stopped');
  } finally {
    signals.dispose();
    await db.close();
  }
}
