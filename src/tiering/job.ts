// `strata tier run`: executes the plan one chunk and one step at a time (DESIGN §4).
//  - Holds the hypertable's session advisory lock for the whole run; a second worker finds it held
//    and leaves (several replicas are safe). The lock lives on a session of its own (src/jobs/lock.ts):
//    when that session is lost (connection error, backend terminated, failover) the run stops at once,
//    cancels the step in flight, journals it failed ("lost the job lock: …") and never takes the lock
//    again under the same run id; the next run converges.
//  - Stops after the current step when its AbortSignal aborts (SIGTERM/SIGINT), journal consistent.
//  - Marks steps a stopped worker left pending or running as failed (journal.reconcileInterrupted);
//    what to do next is re-read from the catalog before every step, so a run after a crash converges.
//  - Each step runs with lock_timeout and is retried with backoff when it cannot get its lock, so it
//    never queues ingest behind it.
//  - Checks each chunk's row count and content checksum before its first step and after its last.
//  - Then merges adjacent settled cold chunks per merge unit and recompresses the result (cold gets
//    the fullest batches, compressed with the largest batch the server allows), checked the same way.
//  - Stops starting new steps at --max-chunks, --max-duration or the end of the maintenance window.
import { randomUUID } from 'node:crypto';
import type { Queryable } from '../db/port.ts';
import { errorText } from '../errors.ts';
import { Journal } from '../jobs/journal.ts';
import type { Logger } from '../log.ts';
import { stopReason } from '../signals.ts';
import { HYPERTABLE, readChunk, readChunks } from '../jobs/chunks.ts';
import { LockLost, backendOf, sessionLocks, type LockSource } from '../jobs/lock.ts';
import { withLockTimeout } from './lock-timeout.ts';
import type { TierMetrics } from './metrics.ts';
import { compactDue, plan as makePlan, stepsFor, targetTier, type Plan } from './plan.ts';
import { boundaries, type TierPolicy } from '../jobs/policy.ts';
import { chunkContent, describeStep, largestBatch, mergeChunks, reorderIndex, runStep, type Content } from './steps.ts';
import type { Merge, Step } from './types.ts';
import { inWindow, type MaintenanceWindow } from './window.ts';

export interface RunOptions {
  policy: TierPolicy;
  hypertable?: string;
  /** Chunks to work on at most (those needing steps), oldest first. */
  maxChunks?: number;
  /** No step starts after this many ms from the start of the run. */
  maxDurationMs?: number;
  window?: MaintenanceWindow;
  /** Row count and checksum before and after each chunk's steps (default true). */
  verify?: boolean;
  lockTimeoutMs?: number;
  /** Attempts of a step that cannot get its lock within lock_timeout (default 5). */
  lockAttempts?: number;
  /** First wait before such a step is tried again (default 1 s, doubling). */
  lockBackoffMs?: number;
  /** Boundaries at this instant instead of now. */
  at?: Date;
  metrics?: TierMetrics;
  /** Stop after the current step when this aborts (a termination signal); the run ends 'stopped'. */
  signal?: AbortSignal;
  /** Where the hypertable's job lock is taken (default: on `db`'s own session). */
  locks?: LockSource;
  /** Fault drills: called after a step committed, before the journal records it. */
  afterStep?: (chunk: string, step: Step) => void | Promise<void>;
  now?: () => Date;
}

export type StopReason = 'done' | 'max-chunks' | 'max-duration' | 'window' | 'locked' | 'lock-lost' | 'stopped';

export interface RunSummary {
  runId: string;
  stopped: StopReason;
  chunksPlanned: number;
  chunksDone: number;
  chunksFailed: number;
  /** Cold merges possible after the chunks' steps, and those done (each with its recompression). */
  mergesPlanned: number;
  mergesDone: number;
  /** Steps the plan listed (a chunk may take another round or two; merges add theirs). */
  stepsPlanned: number;
  stepsDone: number;
  stepsFailed: number;
  interruptedSteps: number;
  /** What stopped the run early: the signal's name ('stopped'), or the lost lock's reason ('lock-lost'). */
  stoppedBy: string | null;
  bytesBefore: number;
  bytesAfter: number;
  seconds: number;
  failures: { chunk: string; step: string; error: string }[];
}

/** A chunk's steps may not take more rounds than this (a step that leaves the catalog unchanged would loop). */
const MAX_ROUNDS = 6;

export async function runTiering(db: Queryable, log: Logger, o: RunOptions): Promise<RunSummary> {
  const hypertable = o.hypertable ?? HYPERTABLE;
  const now = o.now ?? (() => new Date());
  const started = now().getTime();
  const runId = randomUUID();
  const summary: RunSummary = {
    runId, stopped: 'done', chunksPlanned: 0, chunksDone: 0, chunksFailed: 0, mergesPlanned: 0, mergesDone: 0, stepsPlanned: 0, stepsDone: 0, stepsFailed: 0,
    interruptedSteps: 0, stoppedBy: null, bytesBefore: 0, bytesAfter: 0, seconds: 0, failures: [],
  };
  /** `ran`: the run held the lock and worked through the plan (or part of it); a success when nothing failed. */
  const finish = (ran: boolean) => {
    summary.seconds = (now().getTime() - started) / 1000;
    if (ran && summary.stopped !== 'lock-lost' && summary.stopped !== 'stopped' && summary.failures.length === 0) o.metrics?.lastSuccess.set(now().getTime() / 1000);
    return summary;
  };
  if (o.window && !inWindow(o.window, now())) {
    log.info('outside the maintenance window; nothing done', { window: o.window.text });
    summary.stopped = 'window';
    return finish(false);
  }
  if (o.signal?.aborted) {
    summary.stopped = 'stopped';
    summary.stoppedBy = (stopReason(o.signal) ?? 'a stop request');
    return finish(false);
  }
  const lock = await (o.locks ?? sessionLocks(db))(hypertable);
  if (!lock) {
    log.info('another worker holds the tiering lock on this hypertable; nothing done', { hypertable });
    summary.stopped = 'locked';
    return finish(false);
  }
  const journal = new Journal(db, 'tiering', runId, hypertable);
  // The session running the steps: cancelled if the lock is lost while one runs.
  const work = await backendOf(db);
  try {
    summary.interruptedSteps = await journal.reconcileInterrupted();
    if (summary.interruptedSteps) log.warn('earlier run stopped mid-step; continuing from the catalog', { steps: summary.interruptedSteps });
    const b = await boundaries(db, o.policy, o.at);
    const p: Plan = makePlan(await readChunks(db, hypertable), b, o.policy);
    o.metrics?.observePlan(p);
    const todo = p.chunks.filter((c) => c.steps.length > 0);
    summary.chunksPlanned = todo.length;
    summary.stepsPlanned = p.totals.steps;
    log.info('tiering plan', { hypertable, chunks: p.totals.chunks, chunksWithSteps: todo.length, steps: p.totals.steps, bytesToMove: p.totals.bytesToMove });
    const index = await reorderIndex(db, hypertable);
    const batchLimit = await largestBatch(db);
    const lockTimeout = o.lockTimeoutMs ?? 5_000;
    const limitChunks = o.maxChunks ?? Infinity;
    let n = 0;
    for (const cp of todo) {
      if (await mustStop()) break;
      n++;
      const r = await tierChunk(cp.chunk.chunk, `${n}/${todo.length}`);
      if (r === 'done') summary.chunksDone++;
      else if (r === 'failed') summary.chunksFailed++;
      if (r === 'stop') break;
    }
    if (summary.stopped === 'done') {
      const merges = makePlan(await readChunks(db, hypertable), b, o.policy).merges;
      summary.mergesPlanned = merges.length;
      summary.stepsPlanned += merges.length * 2;
      for (const [i, m] of merges.entries()) {
        if (await mustStop()) break;
        const r = await mergeCold(m, `merge ${i + 1}/${merges.length}`);
        if (r === 'done') summary.mergesDone++;
        if (r === 'stop') break;
      }
    }
    if (summary.stopped === 'done' && o.metrics) o.metrics.observePlan(makePlan(await readChunks(db, hypertable), b, o.policy));
    const at = `after step ${summary.stepsDone + summary.stepsFailed} of ${summary.stepsPlanned}`;
    if (summary.stopped === 'stopped') log.info(`tiering run stopped by ${summary.stoppedBy} ${at}; the next run continues from the catalog`, { runId, stepsDone: summary.stepsDone });
    if (summary.stopped === 'lock-lost') log.error(`tiering run stopped ${at}: lost the job lock (${summary.stoppedBy}); the next run continues from the catalog`, { runId, hypertable });
    log.info('tiering run finished', { ...summary, failures: summary.failures.length });
    return finish(true);

    /** Before a chunk's (or a merge's) first step: at a limit, asked to stop, or without the lock, records why and says stop. */
    async function mustStop(): Promise<boolean> {
      const stop = shouldStop();
      if (stop) summary.stopped = stop;
      else await betweenSteps();
      return summary.stopped !== 'done';
    }

    /** Between two steps: stops (recording why) when a signal asked for it or the lock is gone; true then. */
    async function betweenSteps(): Promise<boolean> {
      // An embedded database answers without real I/O: let a pending signal's handler run first.
      await new Promise((r) => setImmediate(r));
      if (o.signal?.aborted) {
        summary.stopped = 'stopped';
        summary.stoppedBy = (stopReason(o.signal) ?? 'a stop request');
        return true;
      }
      try {
        await lock!.verify();
      } catch (err) {
        lockLost(err as LockLost, hypertable);
        return true;
      }
      return false;
    }

    function lockLost(err: LockLost, chunk: string, step = 'lock') {
      if (summary.stopped !== 'lock-lost') {
        summary.stopped = 'lock-lost';
        summary.stoppedBy = err.reason;
        summary.failures.push({ chunk, step, error: err.message });
      }
      o.metrics?.stepFailures.inc({ step: 'lock' });
    }

    /**
     * A step's statements, watched by the lock: lost meanwhile, the statement in flight is cancelled;
     * afterwards the lock is verified, so a step during which the lock was lost is never recorded done.
     * Resolves with the step's error (null when it succeeded) or a LockLost.
     */
    async function watched(fn: () => Promise<void>): Promise<{ error: unknown; lost: LockLost | null }> {
      const cancel = () => void (work && lock!.cancel(work));
      lock!.signal.addEventListener('abort', cancel, { once: true });
      let error: unknown = null;
      try {
        await fn();
      } catch (err) {
        error = err;
      } finally {
        lock!.signal.removeEventListener('abort', cancel);
      }
      try {
        await lock!.verify();
        return { error, lost: null };
      } catch (err) {
        return { error, lost: err instanceof LockLost ? err : new LockLost(errorText(err)) };
      }
    }

    function shouldStop(): StopReason | null {
      if (summary.chunksDone + summary.chunksFailed + summary.mergesDone >= limitChunks) return 'max-chunks';
      if (o.maxDurationMs !== undefined && now().getTime() - started >= o.maxDurationMs) return 'max-duration';
      if (o.window && !inWindow(o.window, now())) return 'window';
      return null;
    }

    /**
     * Runs the steps one chunk needs, re-reading it from the catalog before each: 'done' when it reached
     * its tier, 'failed', or 'stop' (asked to stop, or the lock lost, between or during its steps).
     */
    async function tierChunk(chunk: string, progress: string): Promise<'done' | 'failed' | 'stop'> {
      let state = await readChunk(db, chunk, hypertable);
      if (!state) return 'done'; // dropped meanwhile (archived): nothing to do
      summary.bytesBefore += state.bytes;
      const target = targetTier(state.rangeEnd, b);
      const compact = compactDue(state.rangeEnd, b);
      const before: Content | null = o.verify === false ? null : await chunkContent(db, hypertable, state.rangeStart, state.rangeEnd);
      for (let round = 0; round < MAX_ROUNDS; round++) {
        const step = stepsFor(state, target, o.policy, compact)[0];
        if (!step) break;
        if (round > 0 && shouldStop() === 'max-duration') return 'failed';
        if (round > 0 && (await betweenSteps())) return 'stop';
        const id = await journal.pending(chunk, step.kind, { tablespace: step.tablespace ?? null, target, bytes: state.bytes });
        const t0 = performance.now();
        log.info(`tiering ${progress} ${chunk}: ${describeStep(step)}`, { rangeStart: state.rangeStart, rangeEnd: state.rangeEnd, bytes: state.bytes });
        const { error: err, lost } = await watched(async () => {
          await withLockTimeout(db, { timeoutMs: lockTimeout, attempts: o.lockAttempts, backoffMs: o.lockBackoffMs, log, onAttempt: (a) => journal.running(id, a) }, () =>
            runStep(db, chunk, step, index, target === 'cold' ? batchLimit : null),
          );
          await o.afterStep?.(chunk, step);
        });
        if (lost) {
          const text = err ? `${lost.message} (the step: ${errorText(err)})` : lost.message;
          await journal.finish(id, 'failed', text, { seconds: (performance.now() - t0) / 1000, lockLost: true }).catch(() => {});
          o.metrics?.stepFailures.inc({ step: step.kind });
          summary.stepsFailed++;
          lockLost(lost, chunk, step.kind);
          log.error(`tiering ${progress} ${chunk}: ${describeStep(step)} abandoned: ${lost.message}`, { error: err ?? undefined });
          return 'stop';
        }
        if (err) {
          const text = errorText(err);
          await journal.finish(id, 'failed', text, { seconds: (performance.now() - t0) / 1000 }).catch(() => {});
          o.metrics?.stepFailures.inc({ step: step.kind });
          summary.stepsFailed++;
          summary.failures.push({ chunk, step: step.kind, error: text });
          log.error(`tiering ${progress} ${chunk}: ${describeStep(step)} failed`, { error: err });
          return 'failed';
        }
        const seconds = (performance.now() - t0) / 1000;
        o.metrics?.stepSeconds.observe({ step: step.kind }, seconds);
        const next = await readChunk(db, chunk, hypertable);
        await journal.finish(id, 'done', undefined, { seconds, bytesAfter: next?.bytes ?? null });
        summary.stepsDone++;
        log.info(`tiering ${progress} ${chunk}: ${describeStep(step)} done in ${seconds.toFixed(1)} s`, { bytesAfter: next?.bytes });
        if (!next) return 'done';
        state = next;
      }
      if (stepsFor(state, target, o.policy, compact).length > 0) {
        summary.failures.push({ chunk, step: 'converge', error: `still not in its ${target} state after ${MAX_ROUNDS} steps` });
        return 'failed';
      }
      summary.bytesAfter += state.bytes;
      if (before) {
        const after = await chunkContent(db, hypertable, state.rangeStart, state.rangeEnd);
        if (after.rows !== before.rows || after.checksum !== before.checksum) {
          const error = `content changed across the steps: ${before.rows} rows (checksum ${before.checksum}) before, ${after.rows} rows (checksum ${after.checksum}) after; rows were written into this chunk meanwhile, or a step lost data`;
          const id = await journal.pending(chunk, 'verify');
          await journal.finish(id, 'failed', error);
          summary.failures.push({ chunk, step: 'verify', error });
          log.error(`tiering ${progress} ${chunk}: verification failed`, { error });
          return 'failed';
        }
      }
      return 'done';
    }

    /** Merges a run of adjacent cold chunks, then recompresses the merged chunk; 'done' when both held and the rows are unchanged. */
    async function mergeCold(m: Merge, progress: string): Promise<'done' | 'failed' | 'stop'> {
      const first = m.chunks[0]!;
      const before: Content | null = o.verify === false ? null : await chunkContent(db, hypertable, m.rangeStart, m.rangeEnd);
      const id = await journal.pending(first, 'merge', { chunks: m.chunks, rangeStart: m.rangeStart, rangeEnd: m.rangeEnd, bytes: m.bytes });
      const t0 = performance.now();
      log.info(`tiering ${progress}: merge ${m.chunks.length} cold chunks into ${first}`, { rangeStart: m.rangeStart, rangeEnd: m.rangeEnd, bytes: m.bytes });
      const fail = async (step: string, err: unknown): Promise<'failed'> => {
        const text = errorText(err);
        o.metrics?.stepFailures.inc({ step });
        summary.stepsFailed++;
        summary.failures.push({ chunk: first, step, error: text });
        log.error(`tiering ${progress}: ${step} failed`, { error: err });
        return 'failed';
      };
      const { error: err, lost } = await watched(async () => {
        await withLockTimeout(db, { timeoutMs: lockTimeout, attempts: o.lockAttempts, backoffMs: o.lockBackoffMs, log, onAttempt: (a) => journal.running(id, a) }, () => mergeChunks(db, m.chunks));
        await o.afterStep?.(first, { kind: 'merge' });
      });
      if (lost) {
        await journal.finish(id, 'failed', err ? `${lost.message} (the step: ${errorText(err)})` : lost.message, { seconds: (performance.now() - t0) / 1000, lockLost: true }).catch(() => {});
        summary.stepsFailed++;
        lockLost(lost, first, 'merge');
        log.error(`tiering ${progress}: merge abandoned: ${lost.message}`, { error: err ?? undefined });
        return 'stop';
      }
      if (err) {
        await journal.finish(id, 'failed', errorText(err), { seconds: (performance.now() - t0) / 1000 }).catch(() => {});
        return fail('merge', err);
      }
      const seconds = (performance.now() - t0) / 1000;
      o.metrics?.stepSeconds.observe({ step: 'merge' }, seconds);
      await journal.finish(id, 'done', undefined, { seconds });
      summary.stepsDone++;
      const merged = (await readChunks(db, hypertable)).find((c) => c.rangeStart.getTime() === m.rangeStart.getTime() && c.rangeEnd.getTime() === m.rangeEnd.getTime());
      if (!merged) return fail('merge', new Error(`after merge_chunks no chunk covers [${m.rangeStart.toISOString()}, ${m.rangeEnd.toISOString()})`));
      log.info(`tiering ${progress}: merged into ${merged.chunk} in ${seconds.toFixed(1)} s; recompressing it`);
      if (await betweenSteps()) return 'stop';
      const r = await tierChunk(merged.chunk, progress);
      if (r !== 'done') return r;
      if (before) {
        const after = await chunkContent(db, hypertable, m.rangeStart, m.rangeEnd);
        if (after.rows !== before.rows || after.checksum !== before.checksum) {
          const error = `content changed across the merge: ${before.rows} rows (checksum ${before.checksum}) before, ${after.rows} rows (checksum ${after.checksum}) after`;
          const vid = await journal.pending(merged.chunk, 'verify');
          await journal.finish(vid, 'failed', error);
          return fail('verify', new Error(error));
        }
      }
      return 'done';
    }
  } finally {
    await lock.release().catch(() => {});
  }
}

