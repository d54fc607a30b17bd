// `strata archive run`: chunks entirely older than the archive boundary leave the database for S3,
// one chunk and one step at a time (DESIGN §4), under the hypertable lock tiering also takes:
//   export-upload  export in a REPEATABLE READ snapshot, package as tar.gz, catalog row (uploading),
//                  multipart upload with SHA-256 checksums, catalog row (uploaded)
//   verify         HeadObject size and class; the server's SHA-256 checksum where it returns one,
//                  else the object read back and hashed; the manifest's rows = the chunk's rows now
//   drop           in one transaction: the chunk locked against writes, its rows counted again,
//                  drop_chunks with the chunk's exact bounds, catalog row (dropped)
// What to do next always comes from the catalog and the object store, so a run after a crash at
// any point converges: an interrupted upload leaves no object (multipart is atomic) and is redone;
// an object an interrupted run uploaded is recognised by its SHA-256 and kept, never duplicated;
// nothing is dropped before its object is verified.
// The lock lives on a session of its own (src/jobs/lock.ts): lost (connection error, backend
// terminated, failover), the run stops at once, journals the step in flight failed ("lost the job
// lock: …") and never takes the lock again under the same run id. Its AbortSignal (SIGTERM/SIGINT)
// stops it after the current step.
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { Db, Queryable } from '../../db/port.ts';
import { boundRollupWindow } from '../../db/rollup-window.ts';
import { errorText } from '../../errors.ts';
import { Journal } from '../../jobs/journal.ts';
import type { Logger } from '../../log.ts';
import { bytes as showBytes } from '../../units.ts';
import { HYPERTABLE } from '../../jobs/chunks.ts';
import { LockLost, backendOf, sessionLocks, type LockSource } from '../../jobs/lock.ts';
import { stopReason } from '../../signals.ts';
import { boundaries, type TierPolicy } from '../../jobs/policy.ts';
import type { ChunkState } from '../../jobs/types.ts';
import { entryFor, recordUploaded, recordUploading, setState, type Entry } from './catalog.ts';
import { exportChunk } from './export.ts';
import { objectKey } from './keys.ts';
import type { ArchiveMetrics } from './metrics.ts';
import { buildPackage, readPackage } from './package.ts';
import { archivePlan, type ArchiveStep } from './plan.ts';
import type { ArchiveStore } from './s3.ts';
import type { ArchiveSettings } from './settings.ts';

export interface ArchiveRunOptions {
  settings: ArchiveSettings;
  policy: TierPolicy;
  hypertable?: string;
  maxChunks?: number;
  maxDurationMs?: number;
  lockTimeoutMs?: number;
  at?: Date;
  metrics?: ArchiveMetrics;
  /** Stop after the current step when this aborts (a termination signal); the run ends 'stopped'. */
  signal?: AbortSignal;
  /** Where the hypertable's job lock is taken (default: on `db`'s own session). */
  locks?: LockSource;
  /** Fault drills: called after a step committed, before the journal records it. */
  afterStep?: (chunk: string, step: ArchiveStep) => void | Promise<void>;
}

export interface ArchiveSummary {
  runId: string;
  stopped: 'done' | 'max-chunks' | 'max-duration' | 'locked' | 'lock-lost' | 'stopped';
  /** The signal's name ('stopped'), or the lost lock's reason ('lock-lost'). */
  stoppedBy: string | null;
  chunksPlanned: number;
  /** Steps the plan listed, and those run (done or failed). */
  stepsPlanned: number;
  stepsRun: number;
  chunksArchived: number;
  chunksFailed: number;
  bytesUploaded: number;
  rowsArchived: number;
  seconds: number;
  failures: { chunk: string; step: string; error: string }[];
}

/** A step found the data or the object not as the catalog says: the chunk goes back to uploading. */
class Mismatch extends Error {}

export async function runArchive(db: Db, store: ArchiveStore, log: Logger, o: ArchiveRunOptions): Promise<ArchiveSummary> {
  /** Once per run, before the first drop: the hourly rollup must not refresh over what is dropped (rollup-window.ts). */
  let rollupBounded = false;
  const hypertable = o.hypertable ?? HYPERTABLE;
  const started = Date.now();
  const runId = randomUUID();
  const s: ArchiveSummary = { runId, stopped: 'done', stoppedBy: null, chunksPlanned: 0, stepsPlanned: 0, stepsRun: 0, chunksArchived: 0, chunksFailed: 0, bytesUploaded: 0, rowsArchived: 0, seconds: 0, failures: [] };
  if (store.bucket !== o.settings.bucket) throw new Error(`the object store writes to bucket ${store.bucket}, not region ${o.settings.region}'s bucket ${o.settings.bucket}`);
  if (o.signal?.aborted) {
    s.stopped = 'stopped';
    s.stoppedBy = stopReason(o.signal);
    return s;
  }
  const lock = await (o.locks ?? sessionLocks(db))(hypertable);
  if (!lock) {
    log.info('another worker holds the chunk-job lock on this hypertable; nothing archived', { hypertable });
    s.stopped = 'locked';
    return s;
  }
  const journal = new Journal(db, 'archive', runId, hypertable);
  // The session running the steps (work is a chunk's temporary directory below): cancelled if the lock is lost while one runs.
  const workBackend = await backendOf(db);
  try {
    const interrupted = await journal.reconcileInterrupted();
    if (interrupted) log.warn('earlier archive run stopped mid-step; continuing from the catalog', { steps: interrupted });
    const b = await boundaries(db, o.policy, o.at);
    const plan = await archivePlan(db, hypertable, b.archive);
    const todo = plan.chunks.filter((c) => c.steps.length > 0);
    s.chunksPlanned = todo.length;
    s.stepsPlanned = plan.totals.steps;
    log.info('archive plan', { hypertable, boundary: b.archive, chunks: todo.length, bytes: plan.totals.bytes, bucket: store.bucket });
    for (const [i, cp] of todo.entries()) {
      if (s.chunksArchived + s.chunksFailed >= (o.maxChunks ?? Infinity)) {
        s.stopped = 'max-chunks';
        break;
      }
      if (o.maxDurationMs !== undefined && Date.now() - started >= o.maxDurationMs) {
        s.stopped = 'max-duration';
        break;
      }
      if (await betweenSteps()) break;
      const r = await archiveChunk(cp.chunk, `${i + 1}/${todo.length}`);
      if (r === 'done') s.chunksArchived++;
      else if (r === 'failed') s.chunksFailed++;
      else break;
    }
    s.seconds = (Date.now() - started) / 1000;
    if (s.failures.length === 0 && s.stopped !== 'lock-lost' && s.stopped !== 'stopped') o.metrics?.lastSuccess.set(Date.now() / 1000);
    const at = `after step ${s.stepsRun} of ${s.stepsPlanned}`;
    if (s.stopped === 'stopped') log.info(`archive run stopped by ${s.stoppedBy} ${at}; the next run continues from the catalog`, { runId });
    if (s.stopped === 'lock-lost') log.error(`archive run stopped ${at}: lost the job lock (${s.stoppedBy}); the next run continues from the catalog`, { runId, hypertable });
    log.info('archive run finished', { ...s, failures: s.failures.length });
    return s;
  } finally {
    await lock.release().catch(() => {});
  }

  /** Between two steps: stops (recording why) when a signal asked for it or the lock is gone; true then. */
  async function betweenSteps(): Promise<boolean> {
    // An embedded database answers without real I/O: let a pending signal's handler run first.
    await new Promise((r) => setImmediate(r));
    if (o.signal?.aborted) {
      s.stopped = 'stopped';
      s.stoppedBy = stopReason(o.signal);
      return true;
    }
    try {
      await lock!.verify();
    } catch (err) {
      lockLost(err instanceof LockLost ? err : new LockLost(errorText(err)), hypertable, 'lock');
      return true;
    }
    return false;
  }

  function lockLost(err: LockLost, chunk: string, step: string) {
    if (s.stopped === 'lock-lost') return;
    s.stopped = 'lock-lost';
    s.stoppedBy = err.reason;
    s.failures.push({ chunk, step, error: err.message });
    o.metrics?.failures.inc({ step: 'lock' });
  }

  /** A chunk's steps: 'done' once dropped, 'failed', or 'stop' (asked to stop, or the lock lost). */
  async function archiveChunk(chunk: ChunkState, progress: string): Promise<'done' | 'failed' | 'stop'> {
    const name = chunk.chunk;
    const key = objectKey(o.settings.prefix, o.settings.region, hypertable, chunk.rangeStart, chunk.rangeEnd);
    const work = mkdtempSync(join(o.settings.workDir, 'strata-archive-'));
    try {
      for (let round = 0; round < 4; round++) {
        if (round > 0 && (await betweenSteps())) return 'stop';
        const entry = await entryFor(db, hypertable, chunk.rangeStart, chunk.rangeEnd);
        const step = stepOf(entry);
        if (!step) return 'done';
        const id = await journal.pending(name, step, { key, bucket: store.bucket });
        await journal.running(id);
        const t0 = performance.now();
        log.info(`archive ${progress} ${name}: ${step}`, { key, rangeStart: chunk.rangeStart, rangeEnd: chunk.rangeEnd });
        // The step, watched by the lock: lost meanwhile, the statement in flight is cancelled, and the
        // lock is verified before the step is recorded done.
        const cancel = () => void (workBackend && lock!.cancel(workBackend));
        lock!.signal.addEventListener('abort', cancel, { once: true });
        let detail: Record<string, unknown> | null = null;
        let failure: unknown = null;
        let failed = false;
        try {
          detail = step === 'export-upload' ? await exportUpload(key, work, name) : step === 'verify' ? await verify(entry!, work, name) : await drop(entry!, name);
          await o.afterStep?.(name, step);
        } catch (err) {
          failure = err;
          failed = true;
        } finally {
          lock!.signal.removeEventListener('abort', cancel);
        }
        s.stepsRun++;
        let lost: LockLost | null = null;
        await lock!.verify().catch((err: unknown) => (lost = err instanceof LockLost ? err : new LockLost(errorText(err))));
        if (lost) {
          const l: LockLost = lost;
          await journal.finish(id, 'failed', failed ? `${l.message} (the step: ${errorText(failure)})` : l.message, { seconds: (performance.now() - t0) / 1000, lockLost: true }).catch(() => {});
          o.metrics?.failures.inc({ step });
          lockLost(l, name, step);
          log.error(`archive ${progress} ${name}: ${step} abandoned: ${l.message}`, { error: failure ?? undefined });
          return 'stop';
        }
        try {
          if (failed) throw failure;
          await journal.finish(id, 'done', undefined, { ...detail, seconds: (performance.now() - t0) / 1000 });
          o.metrics?.stepSeconds.observe({ step }, (performance.now() - t0) / 1000);
          log.info(`archive ${progress} ${name}: ${step} done in ${((performance.now() - t0) / 1000).toFixed(1)} s`, detail ?? {});
        } catch (err) {
          const text = errorText(err);
          if (err instanceof Mismatch && entry) await setState(db, entry.id, 'uploading').catch(() => {});
          await journal.finish(id, 'failed', text, { seconds: (performance.now() - t0) / 1000 }).catch(() => {});
          o.metrics?.failures.inc({ step });
          s.failures.push({ chunk: name, step, error: text });
          log.error(`archive ${progress} ${name}: ${step} failed${err instanceof Mismatch ? '; the next run exports it again' : ''}`, { error: err });
          return 'failed';
        }
      }
      return 'failed';
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
  }

  function stepOf(entry: Entry | null): ArchiveStep | null {
    if (!entry || entry.state === 'uploading') return 'export-upload';
    if (entry.state === 'uploaded') return 'verify';
    if (entry.state === 'verified') return 'drop';
    return null;
  }

  async function exportUpload(key: string, work: string, name: string): Promise<Record<string, unknown>> {
    const range = await rangeOf(name);
    const exported = await exportChunk(db, {
      hypertable,
      region: o.settings.region,
      rangeStart: range.rangeStart,
      rangeEnd: range.rangeEnd,
      file: join(work, 'data.csv'),
      onProgress: (bytes) => log.info(`archive ${name}: exported ${showBytes(bytes)}`),
    });
    const foreign = exported.regions.filter((r) => r !== o.settings.region);
    if (foreign.length) {
      throw new Error(`${name} holds rows of facilities in region ${foreign.join(', ')}; this worker archives region ${o.settings.region} into ${store.bucket} only, so nothing was written`);
    }
    const m = exported.manifest;
    const pkg = await buildPackage(m, join(work, 'data.csv'), join(work, 'chunk.tar.gz'));
    const row = await recordUploading(db, {
      hypertable, region: o.settings.region, rangeStart: range.rangeStart, rangeEnd: range.rangeEnd, bucket: store.bucket, key,
      bytes: pkg.bytes, rows: m.rows, rowsPerFacility: m.rowsPerFacility, sha256: pkg.sha256, s3Checksum: pkg.s3Checksum, storageClass: o.settings.storageClass,
    });
    const existing = await store.head(key);
    if (existing && existing.metadata['sha256'] === pkg.sha256 && existing.bytes === pkg.bytes) {
      // An interrupted run uploaded exactly this object and stopped before recording it.
      await recordUploaded(db, row.id, { versionId: existing.versionId, etag: existing.etag, retention: o.settings.retention });
      log.warn(`archive ${name}: the object an interrupted run uploaded is already at ${key}; kept, not uploaded again`);
      return { key, bytes: pkg.bytes, rows: m.rows, sha256: pkg.sha256, adopted: true };
    }
    if (existing) {
      // An earlier export of different rows (rows changed since, or a damaged object): replace it, so one object remains.
      log.warn(`archive ${name}: replacing an earlier, different object at ${key}`, { sha256: existing.metadata['sha256'] ?? null, bytes: existing.bytes });
      await store.delete(key, existing.versionId);
    }
    await store.abortUploads(key);
    const lock = o.settings.objectLock ? { mode: o.settings.objectLock, until: await retainUntil(db, o.settings.retention) } : null;
    let reported = 0;
    const up = await store.upload(key, pkg.file, pkg.bytes, {
      storageClass: o.settings.storageClass,
      metadata: { sha256: pkg.sha256, rows: String(m.rows), 'range-start': m.rangeStart, 'range-end': m.rangeEnd },
      lock,
      onProgress: (loaded) => {
        if (loaded - reported >= pkg.bytes / 10 || loaded === pkg.bytes) {
          reported = loaded;
          log.info(`archive ${name}: uploaded ${showBytes(loaded)} of ${showBytes(pkg.bytes)}`);
        }
      },
    });
    if (up.checksumSha256 && up.checksumSha256 !== pkg.s3Checksum) throw new Mismatch(`S3 computed checksum ${up.checksumSha256} for ${key}; the package's is ${pkg.s3Checksum}`);
    await recordUploaded(db, row.id, { versionId: up.versionId, etag: up.etag, retention: o.settings.retention });
    s.bytesUploaded += pkg.bytes;
    o.metrics?.bytes.inc(pkg.bytes);
    return { key, bytes: pkg.bytes, rows: m.rows, sha256: pkg.sha256, versionId: up.versionId };
  }

  async function verify(entry: Entry, work: string, name: string): Promise<Record<string, unknown>> {
    const head = await store.head(entry.key);
    if (!head) throw new Mismatch(`${entry.key} is not in bucket ${store.bucket}`);
    if (head.bytes !== entry.bytes) throw new Mismatch(`${entry.key} is ${head.bytes} bytes in the bucket; ${entry.bytes} were uploaded`);
    if (head.storageClass !== entry.storageClass) throw new Mismatch(`${entry.key} has storage class ${head.storageClass}; ${entry.storageClass} was asked for`);
    let how: string;
    if (head.checksumSha256) {
      if (head.checksumSha256 !== entry.s3Checksum) throw new Mismatch(`${entry.key}: S3's SHA-256 checksum ${head.checksumSha256} differs from the package's ${entry.s3Checksum}`);
      how = 'server checksum';
    } else {
      // No checksum from the server: read the object back, hash it and check its contents.
      const back = await readPackage(await store.download(entry.key, entry.versionId), join(work, 'verify.csv'), entry.key).catch((err: unknown) => {
        throw new Mismatch(errorText(err));
      });
      if (back.objectSha256 !== entry.sha256) throw new Mismatch(`${entry.key}: the object's SHA-256 is ${back.objectSha256}; ${entry.sha256} was uploaded`);
      if (back.manifest.rows !== entry.rows) throw new Mismatch(`${entry.key}: its manifest lists ${back.manifest.rows} rows; the catalog ${entry.rows}`);
      how = 'read back and hashed';
    }
    const now = await rowsIn(db, entry.rangeStart, entry.rangeEnd);
    if (now !== entry.rows) throw new Mismatch(`${name} holds ${now} rows now; the archived export holds ${entry.rows} (rows arrived or were deleted after the export)`);
    await setState(db, entry.id, 'verified');
    return { key: entry.key, checked: how, rows: now };
  }

  async function drop(entry: Entry, name: string): Promise<Record<string, unknown>> {
    if (!rollupBounded) {
      const w = await boundRollupWindow(db, o.policy.archiveAfter);
      if (w?.changed) log.warn('hourly rollup refresh window bounded by the archive age before dropping chunks (run strata migrate after changing STRATA_ARCHIVE_AFTER)', { from: w.from ?? 'unbounded', to: w.to });
      rollupBounded = true;
    }
    const lockTimeout = o.lockTimeoutMs ?? 5_000;
    const dropped = await db.transaction(async (tx) => {
      await tx.query(`SELECT set_config('lock_timeout', $1, true)`, [`${lockTimeout}ms`]);
      // Writes into the chunk wait until the drop commits, so no row lands between the count and the drop.
      await tx.exec(`LOCK TABLE ${name} IN SHARE MODE`);
      const n = await rowsIn(tx, entry.rangeStart, entry.rangeEnd);
      if (n !== entry.rows) throw new Mismatch(`${name} holds ${n} rows now; the archived export holds ${entry.rows}; not dropped`);
      const r = await tx.query<{ c: string }>(`SELECT c::text FROM drop_chunks($1::regclass, older_than => $3::timestamptz, newer_than => $2::timestamptz) c`, [hypertable, entry.rangeStart, entry.rangeEnd]);
      const names = r.rows.map((x) => x.c);
      if (names.length !== 1 || names[0] !== name) throw new Error(`drop_chunks for [${entry.rangeStart.toISOString()}, ${entry.rangeEnd.toISOString()}) would drop ${names.join(', ') || 'nothing'}, not just ${name}; rolled back`);
      await setState(tx, entry.id, 'dropped');
      return n;
    });
    s.rowsArchived += dropped;
    o.metrics?.rows.inc(dropped);
    o.metrics?.chunks.inc();
    return { key: entry.key, rows: dropped };
  }

  async function rangeOf(name: string): Promise<{ rangeStart: Date; rangeEnd: Date }> {
    const r = await db.query<{ range_start: Date; range_end: Date }>(
      `SELECT range_start, range_end FROM timescaledb_information.chunks WHERE format('%I.%I', chunk_schema, chunk_name) = $1`,
      [name],
    );
    if (!r.rows[0]) throw new Error(`${name} no longer exists`);
    return { rangeStart: r.rows[0].range_start, rangeEnd: r.rows[0].range_end };
  }

  async function rowsIn(q: Queryable, from: Date, to: Date): Promise<number> {
    const r = await q.query<{ n: number | string }>(`SELECT count(*) AS n FROM ${hypertable} WHERE time >= $1 AND time < $2`, [from, to]);
    return Number(r.rows[0]!.n);
  }
}

async function retainUntil(db: Queryable, retention: string): Promise<Date> {
  return (await db.query<{ t: Date }>(`SELECT now() + $1::interval AS t`, [retention])).rows[0]!.t;
}
