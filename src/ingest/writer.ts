// The COPY writer: one transaction per batch = ledger row + binary COPY (exactly-once, DESIGN §2).
// Retryable failures (classify.ts) are retried with backoff and jitter; when the retry budget is
// spent the batch goes to the disk spool and the database is marked down, so later batches spool
// at once until the replayer sees it back. A data error splits the batch into one transaction per
// request, so only the offending request's rows are rejected (DESIGN §8.3).
import { createHash } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Db } from '../db/port.ts';
import { errorText } from '../errors.ts';
import type { Logger } from '../log.ts';
import type { Batch, Part } from './batcher.ts';
import { DOWN, backoffMs, classify, isReadOnlyError } from './classify.ts';
import { BINARY_HEADER, BINARY_TRAILER, METRICS_COPY_BINARY } from './copy-encode.ts';
import { FairSlots } from './fair-slots.ts';
import { COLUMNSTORE_SETTINGS, type IngestModeGate } from './ingest-mode.ts';
import type { IngestMetrics } from './metrics.ts';
import { SpoolFullError, type Spool } from './spool.ts';
import type { SpoolRecord } from './types.ts';

export interface WriterOptions {
  /** Attempts per batch before it is spooled (retryable errors only). */
  maxAttempts: number;
  /**
   * One attempt's deadline; past it the attempt is cancelled on the server and, once that settled,
   * retried (the ledger dedups one that committed regardless). It grows with the database's recent
   * answer times and with the deadlines the batch already missed (see deadline()), so a database
   * that is slow under load is waited for rather than taken for down.
   */
  attemptTimeoutMs: number;
  /**
   * Transactions in flight at once (STRATA_WRITERS). An attempt's deadline starts when it holds one
   * of these slots, so time spent queueing behind other batches is not taken for a lost answer.
   */
  concurrency: number;
  /** Row store or columnstore (ingest-mode.ts); default: the row store. */
  mode?: IngestModeGate;
}

/** An attempt may take this many times the recent average before it counts as lost… */
const SLOWDOWN = 10;
/** …but never longer than this. */
const MAX_DEADLINE_MS = 15_000;
/** A batch that keeps timing out while others commit is spooled after this many times its attempt budget. */
const SLOW_TRIES = 4;

type Outcome = 'committed' | 'duplicate';

const LEDGER = 'INSERT INTO strata.ingest_ledger (batch_id, facility_id, row_count) VALUES ($1, $2, $3) ON CONFLICT (batch_id) DO NOTHING RETURNING batch_id';
/** The same, also turning on the columnstore COPY for this transaction: one round trip either way. */
const LEDGER_COLUMNSTORE = `WITH direct AS (${COLUMNSTORE_SETTINGS}) INSERT INTO strata.ingest_ledger (batch_id, facility_id, row_count) SELECT $1::uuid, $2::integer, $3::integer FROM direct ON CONFLICT (batch_id) DO NOTHING RETURNING batch_id`;

/** A stable id for part `i` of batch `id` (used when a data error splits a batch). */
export function partId(id: string, i: number): string {
  const h = createHash('sha256').update(`${id}/${i}`).digest('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-8${h.slice(13, 16)}-a${h.slice(17, 20)}-${h.slice(20, 32)}`;
}

/** The attempt's own deadline passed (or the driver's query timeout, which is set to the same value). */
function isDeadline(err: unknown): boolean {
  const e = err as { deadline?: unknown; message?: unknown } | null;
  return e?.deadline === true || (typeof e?.message === 'string' && /query read timeout/i.test(e.message));
}

/** The DOWN text for a retryable failure of commitWithRetry. */
export function downReason(err: unknown): string {
  return (err as { readOnly?: boolean }).readOnly ? DOWN.readOnly : DOWN.unreachable;
}

export class Writer {
  /**
   * True after a batch exhausted its retries or met a read-only server (markDown); cleared by
   * markUp() once the replayer's probe finds the database accepting writes again.
   */
  down = false;
  /** Why the database is taken for down (a DOWN text), null while up. */
  downReason: string | null = null;
  /** Moving average of successful attempts' durations, ms. */
  private averageMs = 0;
  private readonly slots: FairSlots;
  /** Count of transactions committed so far: a timed-out attempt during which it grew met a slow database, not a down one. */
  private commits = 0;

  constructor(
    private readonly db: Db,
    private readonly spool: Spool,
    private readonly metrics: IngestMetrics,
    private readonly log: Logger,
    private readonly opts: WriterOptions,
    private readonly facilityCode: (id: number) => string,
  ) {
    this.slots = new FairSlots(opts.concurrency, { reserve: true });
  }

  /**
   * The database is down for writing (unreachable, or answering but read-only): batches spool at once
   * until markUp(). Logs only a change of state (up → down, or a new reason), never once a batch or
   * once a probe.
   */
  markDown(reason: string, error?: unknown): void {
    if (!this.down) this.log.warn('database unavailable; spooling batches until it accepts writes again', { reason, ...(error === undefined ? {} : { error }) });
    else if (reason !== this.downReason) this.log.info('database still unavailable', { reason });
    this.down = true;
    this.downReason = reason;
  }

  /** The database accepts writes again; logs the change of state once. */
  markUp(fields: Record<string, unknown> = {}): void {
    if (this.down) this.log.info('database accepts writes again; replaying the spool', fields);
    this.down = false;
    this.downReason = null;
  }

  /**
   * The attempt deadline: the configured one, or SLOWDOWN × the recent average if longer, doubled
   * for each deadline this batch already missed (a missed attempt is cancelled, so a batch that
   * honestly needs longer must be given longer), never above MAX_DEADLINE_MS.
   */
  deadline(missed = 0): number {
    const base = Math.max(this.opts.attemptTimeoutMs, SLOWDOWN * this.averageMs);
    return Math.min(Math.max(MAX_DEADLINE_MS, this.opts.attemptTimeoutMs), base * 2 ** Math.min(missed, 16));
  }

  /**
   * One transaction in a writer slot: the ledger row, then the rows; 'duplicate' when the ledger
   * already has the id. Slots are shared between facilities: a free slot goes to the facility after
   * the one served last (round robin), so a facility with many batches waiting delays another
   * facility's batch by at most one attempt per slot, not by its whole backlog.
   */
  async commit(id: string, facilityId: number, rowCount: number, chunks: readonly Buffer[], missed = 0): Promise<Outcome> {
    await this.slots.acquire(facilityId);
    try {
      return await this.attempt(id, facilityId, rowCount, chunks, this.deadline(missed));
    } finally {
      this.slots.release(facilityId);
    }
  }

  /**
   * One attempt. Past its deadline the attempt is aborted: the port cancels the statement on the
   * server and settles only once the server let go of it, so the slot (and the pooled connection)
   * is held until then and never handed on while the old COPY still runs.
   */
  private async attempt(id: string, facilityId: number, rowCount: number, chunks: readonly Buffer[], ms: number): Promise<Outcome> {
    const started = performance.now();
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(Object.assign(new Error(`batch ${id}: no answer within ${ms} ms; the attempt was cancelled`), { code: 'ETIMEDOUT', deadline: true })), ms);
    let outcome: Outcome;
    try {
      const ledger = this.opts.mode && (await this.opts.mode.mode()) === 'columnstore' ? LEDGER_COLUMNSTORE : LEDGER;
      outcome = await this.db.transaction(async (tx) => {
        const r = await tx.query(ledger, [id, facilityId, rowCount]);
        if (r.rowCount === 0) return 'duplicate' as const;
        const copied = await tx.copyIn(METRICS_COPY_BINARY, [BINARY_HEADER, ...chunks, BINARY_TRAILER]);
        if (copied !== rowCount) throw new Error(`COPY reported ${copied} rows for a batch of ${rowCount}`);
        return 'committed' as const;
      }, { signal: abort.signal });
    } catch (err) {
      // The statement's own error after a cancel (57014, or the cut connection) is the deadline's doing.
      throw abort.signal.aborted ? abort.signal.reason : err;
    } finally {
      clearTimeout(timer);
    }
    const took = performance.now() - started;
    this.commits++;
    this.averageMs = this.averageMs === 0 ? took : 0.8 * this.averageMs + 0.2 * took;
    this.metrics.copySeconds.observe(took / 1000);
    if (outcome === 'duplicate') this.metrics.duplicatesAvoided.inc();
    else {
      this.metrics.rowsCommitted.inc({ facility: this.facilityCode(facilityId) }, rowCount);
      this.metrics.bytesCommitted.inc(chunks.reduce((n, c) => n + c.length, 0));
    }
    return outcome;
  }

  /**
   * Commit with retries; resolves with the outcome or rejects with the last error and its class.
   * An attempt that ran out of time while other transactions committed does not count against the
   * budget: the database is slow, not down, so the batch waits (and the queue bound pushes back on
   * collectors with 429) instead of being spooled — up to SLOW_TRIES times the budget.
   */
  private async commitWithRetry(id: string, facilityId: number, rowCount: number, chunks: readonly Buffer[], stage: 'write' | 'replay') {
    for (let attempt = 0, tries = 0, missed = 0; ; tries++) {
      const commitsBefore = this.commits;
      try {
        return await this.commit(id, facilityId, rowCount, chunks, missed);
      } catch (err) {
        const cls = classify(err);
        if (isDeadline(err)) missed++;
        this.metrics.errors.inc({ stage });
        // A read-only server (a primary turned read-only, a standby behind the write endpoint) stays
        // so until a failover moves the endpoint: spool now rather than retry against it.
        if (isReadOnlyError(err)) throw Object.assign(new Error(errorText(err)), { cls, readOnly: true, cause: err });
        const slowNotDown = cls === 'retry' && isDeadline(err) && this.commits > commitsBefore && tries + 1 < SLOW_TRIES * this.opts.maxAttempts;
        if (!slowNotDown) attempt++;
        if (cls !== 'retry' || attempt >= this.opts.maxAttempts) throw Object.assign(new Error(errorText(err)), { cls, cause: err });
        this.metrics.retries.inc({ stage });
        this.log.debug(slowNotDown ? 'batch attempt timed out while others committed; retrying' : 'batch attempt failed; retrying', { batchId: id, attempt, tries: tries + 1, error: err });
        await sleep(backoffMs(Math.min(attempt, tries)));
      }
    }
  }

  /** Writes a batch and settles every part: committed, spooled, or rejected with a status. */
  async write(batch: Batch): Promise<void> {
    this.metrics.batchRows.observe(batch.rowCount);
    if (this.down) return this.toSpool(batch.id, batch.facilityId, batch.parts);
    try {
      const outcome = await this.commitWithRetry(batch.id, batch.facilityId, batch.rowCount, batch.parts.map((p) => p.rows), 'write');
      this.metrics.batches.inc({ outcome });
      for (const p of batch.parts) p.done({ ok: true, via: 'db' });
    } catch (err) {
      const cls = (err as { cls?: string }).cls;
      if (cls === 'retry') {
        this.markDown(downReason(err), err);
        return this.toSpool(batch.id, batch.facilityId, batch.parts);
      }
      if (cls === 'data' && batch.parts.length > 1) return this.writeSeparately(batch);
      this.settleFailed(batch.parts, cls, err);
    }
  }

  /** After a data error: each request in its own transaction, so only the offending ones fail. */
  private async writeSeparately(batch: Batch): Promise<void> {
    await Promise.all(
      batch.parts.map(async (p, i) => {
        const id = partId(batch.id, i);
        try {
          const outcome = await this.commitWithRetry(id, batch.facilityId, p.rowCount, [p.rows], 'write');
          this.metrics.batches.inc({ outcome });
          p.done({ ok: true, via: 'db' });
        } catch (err) {
          if ((err as { cls?: string }).cls === 'retry') {
            this.markDown(downReason(err), err);
            return this.toSpool(id, batch.facilityId, [p]);
          }
          this.settleFailed([p], (err as { cls?: string }).cls, err);
        }
      }),
    );
  }

  private settleFailed(parts: Part[], cls: string | undefined, err: unknown): void {
    const data = cls === 'data';
    this.metrics.batches.inc({ outcome: data ? 'rejected' : 'failed' });
    if (!data) this.log.error('batch failed with a permanent database error', { error: err });
    for (const p of parts) {
      this.metrics.rowsRejected.inc({ reason: data ? 'database_rejected' : 'database_error' }, p.rowCount);
      p.done(data ? { ok: false, status: 400, message: `the database rejected the rows: ${errorText(err)}` } : { ok: false, status: 500, message: `database error: ${errorText(err)}` });
    }
  }

  private async toSpool(id: string, facilityId: number, parts: Part[]): Promise<void> {
    const rowCount = parts.reduce((n, p) => n + p.rowCount, 0);
    const record: SpoolRecord = { batchId: id, facilityId, rowCount, rows: Buffer.concat(parts.map((p) => p.rows)), spooledAt: Date.now() };
    try {
      await this.spool.append([record]);
      this.metrics.batches.inc({ outcome: 'spooled' });
      this.metrics.rowsSpooled.inc(rowCount);
      for (const p of parts) p.done({ ok: true, via: 'spool' });
    } catch (err) {
      this.metrics.errors.inc({ stage: 'spool' });
      const full = err instanceof SpoolFullError;
      if (!full) this.log.error('cannot write to the spool', { error: err });
      for (const p of parts) p.done({ ok: false, status: 503, message: full ? 'the database is unreachable and the spool is full; retry later' : `the database is unreachable and the spool failed: ${errorText(err)}` });
    }
  }

  /** Replays one spooled batch (the ledger makes a repeat harmless); throws on failure so replay stops. */
  async replay(record: SpoolRecord): Promise<void> {
    try {
      await this.commitWithRetry(record.batchId, record.facilityId, record.rowCount, [record.rows], 'replay');
    } catch (err) {
      if ((err as { cls?: string }).cls === 'data') {
        // Acknowledged rows the database now refuses: keep them for an operator instead of blocking the spool.
        this.log.error('spooled batch rejected by the database; kept in the spool rejects', { batchId: record.batchId, error: err });
        throw Object.assign(new Error(errorText(err)), { rejectRecord: true });
      }
      throw err;
    }
  }
}
