// `strata archive plan|run|list|restore|expire|lifecycle`: argument parsing and output (text, or
// --json). The work is in plan.ts, job.ts, restore.ts and expire.ts.
import { parseArgs } from 'node:util';
import type { Config } from '../../config.ts';
import type { Db } from '../../db/port.ts';
import { UsageError } from '../../errors.ts';
import { jobLocks, type LockSource } from '../../jobs/lock.ts';
import type { Logger } from '../../log.ts';
import { stopOnSignals } from '../../signals.ts';
import { HYPERTABLE } from '../../jobs/chunks.ts';
import { boundaries, policyFromConfig } from '../../jobs/policy.ts';
import { bytes, parseDuration } from '../../units.ts';
import { listEntries } from './catalog.ts';
import { expireArchive, lifecycleRules } from './expire.ts';
import { runArchive, type ArchiveSummary } from './job.ts';
import { archivePlan } from './plan.ts';
import { restoreArchive } from './restore.ts';
import { ArchiveStore } from './s3.ts';
import type { LocalS3 } from './local-s3.ts';
import { archiveSettings } from './settings.ts';

export const ARCHIVE_USAGE = `usage: strata archive plan [--at <timestamp>] [--json]
       strata archive run [--max-chunks <n>] [--max-duration <e.g. 2h>] [--json]
       strata archive list [--from <time>] [--to <time>] [--facility <code>] [--json]
       strata archive restore --from <time> --to <time> [--facility <code>] [--into <table>] [--wait] [--poll <e.g. 5m>] [--max-wait <e.g. 12h>] [--json]
       strata archive expire [--dry-run] [--json]
       strata archive lifecycle [--apply] [--json]`;

const minute = (d: Date) => d.toISOString().slice(0, 16).replace('T', ' ');

function time(cmd: string, flag: string, v: string | undefined): Date | undefined {
  if (v === undefined) return undefined;
  const d = new Date(v);
  if (Number.isNaN(d.getTime())) throw new UsageError(`strata archive ${cmd}: --${flag} "${v}" is not a timestamp (use ISO 8601, such as 2025-01-01 or 2025-01-01T00:00:00Z)`);
  return d;
}

function duration(cmd: string, flag: string, v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  const ms = parseDuration(v);
  if (!ms) throw new UsageError(`strata archive ${cmd}: --${flag} "${v}" must be a duration such as 90s, 30m, 2h or 1h30m`);
  return ms;
}

async function facilityId(db: Db, code: string | undefined): Promise<number | undefined> {
  if (code === undefined) return undefined;
  const r = await db.query<{ id: number }>('SELECT id FROM strata.facilities WHERE code = $1', [code]);
  if (!r.rows[0]) throw new UsageError(`strata archive: --facility "${code}": no such facility (strata facility list shows them)`);
  return r.rows[0].id;
}

export function formatArchiveSummary(s: ArchiveSummary, bucket: string): string {
  const stop: Record<ArchiveSummary['stopped'], string> = {
    done: 'every due chunk was handled', 'max-chunks': 'stopped at --max-chunks', 'max-duration': 'stopped at --max-duration', locked: 'another worker holds the lock on this hypertable; nothing done',
    'lock-lost': `lost the job lock (${s.stoppedBy ?? 'its session ended'}); stopped at once, the next run continues from the catalog`,
    stopped: `stopped by ${s.stoppedBy ?? 'a signal'} after step ${s.stepsRun} of ${s.stepsPlanned}; the next run continues from the catalog`,
  };
  return [
    `archive run ${s.runId} into ${bucket}: ${stop[s.stopped]}`,
    `${s.chunksArchived} of ${s.chunksPlanned} chunks archived, ${s.chunksFailed} failed; ${bytes(s.bytesUploaded)} uploaded; ${s.rowsArchived} rows left the database; ${s.seconds.toFixed(1)} s`,
    ...s.failures.map((f) => `failed: ${f.chunk} ${f.step}: ${f.error}`),
  ].join('\n');
}

export interface ArchiveCommandDeps {
  /** Where the job lock is taken (default: a dedicated connection to STRATA_ADMIN_DATABASE_URL; the embedded database's own session). */
  locks?: LockSource;
  /** Stops `archive run` after its current step (default: SIGTERM/SIGINT). */
  signal?: AbortSignal;
}

export async function archiveCommand(args: string[], config: Config, log: Logger, db: Db, out: (t: string) => void, deps: ArchiveCommandDeps = {}): Promise<number> {
  const [sub, ...rest] = args;
  const json = (v: unknown) => out(JSON.stringify(v, null, 2));
  if (!['plan', 'run', 'list', 'restore', 'expire', 'lifecycle'].includes(sub ?? '')) throw new UsageError(`strata archive: unknown subcommand ${sub ? `"${sub}"` : '(none)'}\n${ARCHIVE_USAGE}`);
  const policy = policyFromConfig(config);

  if (sub === 'plan') {
    const { values } = parseArgs({ args: rest, options: { json: { type: 'boolean' }, at: { type: 'string' } } });
    const b = await boundaries(db, policy, time('plan', 'at', values.at));
    const p = await archivePlan(db, HYPERTABLE, b.archive);
    if (values.json) {
      json(p);
      return 0;
    }
    const due = p.chunks.filter((c) => c.steps.length > 0);
    out([
      `archive boundary: ${minute(p.boundary)} (chunks whose range ended by then leave the database)`,
      ...p.chunks.map((c) => `${c.chunk.chunk.replace(/^_timescaledb_internal\./, '')}  ${minute(c.chunk.rangeStart)} → ${minute(c.chunk.rangeEnd)}  ${bytes(c.chunk.bytes)}  ${c.entry?.state ?? 'not archived'}  ${c.steps.join(', ') || '-'}${c.note ? `  (${c.note})` : ''}`),
      `${due.length} chunks to archive (${bytes(p.totals.bytes)} on disk), ${p.totals.steps} steps`,
    ].join('\n'));
    return 0;
  }

  if (sub === 'list') {
    const { values } = parseArgs({ args: rest, options: { json: { type: 'boolean' }, from: { type: 'string' }, to: { type: 'string' }, facility: { type: 'string' } } });
    const from = time('list', 'from', values.from);
    const to = time('list', 'to', values.to);
    const fid = await facilityId(db, values.facility);
    const entries = await listEntries(db, { ...(from ? { from } : {}), ...(to ? { to } : {}), ...(fid !== undefined ? { facilityId: fid } : {}) });
    if (values.json) {
      json(entries);
      return 0;
    }
    out([
      ...entries.map((e) => `${minute(e.rangeStart)} → ${minute(e.rangeEnd)}  ${e.state}  ${e.storageClass}  ${e.rows ?? '?'} rows  ${e.bytes === null ? '?' : bytes(e.bytes)}  s3://${e.bucket}/${e.key}${e.retainUntil ? `  retained until ${e.retainUntil.toISOString().slice(0, 10)}` : ''}`),
      `${entries.length} archived chunks`,
    ].join('\n'));
    return 0;
  }

  // On strata dev's embedded database with no S3 endpoint configured: strata dev's local S3 directory.
  let local: LocalS3 | null = null;
  if (config.adminDatabaseUrl?.startsWith('pglite:') && !config.s3Endpoint && config.adminDatabaseUrl !== 'pglite:memory') {
    // Imported only here: the local S3 server (s3rver) is for strata dev's embedded setups.
    const { localS3Dir, startLocalS3 } = await import('./local-s3.ts');
    local = await startLocalS3(config, localS3Dir(config.adminDatabaseUrl));
    log.info(`embedded database: using the local S3 server over ${localS3Dir(config.adminDatabaseUrl)}`, { endpoint: local.endpoint });
  }
  const settings = local?.settings ?? archiveSettings(config);
  const store = new ArchiveStore(settings);
  try {
    if (sub === 'run') {
      const { values } = parseArgs({ args: rest, options: { json: { type: 'boolean' }, 'max-chunks': { type: 'string' }, 'max-duration': { type: 'string' } } });
      const maxChunks = values['max-chunks'] === undefined ? undefined : Number(values['max-chunks']);
      if (maxChunks !== undefined && !(Number.isInteger(maxChunks) && maxChunks > 0)) throw new UsageError(`strata archive run: --max-chunks "${values['max-chunks']}" must be a whole number above 0`);
      const maxDurationMs = duration('run', 'max-duration', values['max-duration']);
      // SIGTERM/SIGINT: the run stops after its current step and exits 0; a second signal exits at once.
      const signals = deps.signal ? null : stopOnSignals({ log, what: 'the archive run stops after its current step' });
      let s: ArchiveSummary;
      try {
        s = await runArchive(db, store, log, {
          settings, policy, lockTimeoutMs: config.tierLockTimeoutMs, ...(maxChunks ? { maxChunks } : {}), ...(maxDurationMs ? { maxDurationMs } : {}),
          locks: deps.locks ?? jobLocks(config.adminDatabaseUrl, db), signal: deps.signal ?? signals!.signal,
        });
      } finally {
        signals?.dispose();
      }
      out(values.json ? JSON.stringify(s, null, 2) : formatArchiveSummary(s, settings.bucket));
      return s.failures.length || s.stopped === 'lock-lost' ? 1 : 0;
    }
    if (sub === 'restore') {
      const { values } = parseArgs({
        args: rest,
        options: { json: { type: 'boolean' }, from: { type: 'string' }, to: { type: 'string' }, facility: { type: 'string' }, into: { type: 'string' }, wait: { type: 'boolean' }, poll: { type: 'string' }, 'max-wait': { type: 'string' } },
      });
      const from = time('restore', 'from', values.from);
      const to = time('restore', 'to', values.to);
      if (!from || !to) throw new UsageError(`strata archive restore: --from and --to are required\n${ARCHIVE_USAGE}`);
      const fid = await facilityId(db, values.facility);
      const pollMs = duration('restore', 'poll', values.poll);
      const maxWaitMs = duration('restore', 'max-wait', values['max-wait']);
      let r;
      try {
        r = await restoreArchive(db, store, log, { settings, from, to, ...(fid !== undefined ? { facilityId: fid } : {}), ...(values.into ? { into: values.into } : {}), wait: !!values.wait, ...(pollMs ? { pollMs } : {}), ...(maxWaitMs ? { maxWaitMs } : {}) });
      } catch (err) {
        if (err instanceof RangeError) throw new UsageError(`strata archive restore: ${err.message}`);
        throw err;
      }
      if (values.json) json(r);
      else
        out([
          `${r.chunks} archived chunks overlap the range; ${r.loaded.length} loaded (${r.rows} rows into ${values.into ?? HYPERTABLE})`,
          ...r.pending.map((p) => `pending: ${p.key}: Glacier restore ${p.state === 'requested' ? 'requested now' : 'in progress'}; run the same command again later, or add --wait`),
          ...r.failures.map((f) => `failed: ${f.key}: ${f.error}`),
        ].join('\n'));
      return r.failures.length ? 1 : r.pending.length ? 75 : 0;
    }
    if (sub === 'expire') {
      const { values } = parseArgs({ args: rest, options: { json: { type: 'boolean' }, 'dry-run': { type: 'boolean' } } });
      const r = await expireArchive(db, store, log, { dryRun: !!values['dry-run'] });
      if (values.json) json(r);
      else out([...r.expired.map((e) => `${values['dry-run'] ? 'would expire' : 'expired'}: s3://${settings.bucket}/${e.key} (retained until ${e.retainUntil.toISOString().slice(0, 10)})`), ...r.failures.map((f) => `failed: ${f.key}: ${f.error}`), `${r.expired.length} objects ${values['dry-run'] ? 'past their retention' : 'expired'}`].join('\n'));
      return r.failures.length ? 1 : 0;
    }
    // lifecycle
    const { values } = parseArgs({ args: rest, options: { json: { type: 'boolean' }, apply: { type: 'boolean' } } });
    const rules = lifecycleRules(settings);
    if (values.apply) await store.putLifecycle(rules);
    out(values.json || !values.apply ? JSON.stringify({ Bucket: settings.bucket, LifecycleConfiguration: { Rules: rules } }, null, 2) : `applied lifecycle rule ${rules[0]!.ID} to s3://${settings.bucket}/${rules[0]!.Filter!.Prefix}`);
    return 0;
  } finally {
    store.close();
    await local?.stop();
  }
}
