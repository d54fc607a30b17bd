// Brings spooled batches back: while the writer is marked down it probes the database; once the
// database accepts writes (probeWritable: reachable, not in recovery, not read-only — a server that
// answers but refuses writes is still down, so the gateway never flaps between a read-only primary
// and the spool) it replays the spool in order (the ledger drops batches committed before) and
// only then lets the spool delete them. It also prunes old ledger rows and keeps the spool gauges.
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Db } from '../db/port.ts';
import { errorText } from '../errors.ts';
import type { Logger } from '../log.ts';
import { probeWritable } from './classify.ts';
import { BINARY_HEADER, BINARY_TRAILER } from './copy-encode.ts';
import type { IngestMetrics } from './metrics.ts';
import type { Spool } from './spool.ts';
import type { SpoolRecord } from './types.ts';
import { downReason, type Writer } from './writer.ts';

export interface ReplayerOptions {
  intervalMs: number;
  /** Ledger rows older than this PostgreSQL interval are deleted. */
  ledgerRetention: string;
  pruneEveryMs: number;
  /** Where batches the database refuses on replay are kept for an operator (binary COPY files). */
  rejectDir: string;
}

const PRUNE = `DELETE FROM strata.ingest_ledger WHERE batch_id IN (
  SELECT batch_id FROM strata.ingest_ledger WHERE committed_at < now() - $1::interval LIMIT 10000)`;

export class Replayer {
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<void> | null = null;
  private lastPrune = 0;
  /** The last replay error of a kind that does not mark the database down, so a stuck replay logs once, not once a pass. */
  private lastReplayError: string | null = null;
  /** Probes made while the writer was down (for tests and diagnostics). */
  probes = 0;

  constructor(
    private readonly db: Db,
    private readonly spool: Spool,
    private readonly writer: Writer,
    private readonly metrics: IngestMetrics,
    private readonly log: Logger,
    private readonly opts: ReplayerOptions,
  ) {
    spool.useMetrics(metrics); // damaged spans and torn tails found by replays (strata_ingest_spool_damaged_*)
  }

  start(): void {
    this.lastPrune = Date.now();
    this.timer = setInterval(() => void this.tick(), this.opts.intervalMs);
    this.timer.unref();
    void this.tick();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.running;
  }

  /** One pass; concurrent calls share it. */
  tick(): Promise<void> {
    this.running ??= this.pass().finally(() => (this.running = null));
    return this.running;
  }

  private gauges(): void {
    this.metrics.spoolBytes.set(this.spool.bytes);
    const oldest = this.spool.oldestSpooledAt;
    this.metrics.spoolOldestAge.set(oldest === null ? 0 : (Date.now() - oldest) / 1000);
  }

  private async pass(): Promise<void> {
    this.gauges();
    if (this.writer.down) {
      this.probes++;
      const state = await probeWritable(this.db);
      if (!state.writable) {
        this.writer.markDown(state.reason); // logs only if the reason changed
        return;
      }
      this.writer.markUp({ spooledBytes: this.spool.bytes });
    }
    if (!this.spool.empty) await this.replay();
    // Never prune while this gateway still holds spooled batches: their earlier attempts' ledger rows
    // are what keeps a replay from writing them twice.
    if (this.spool.empty && Date.now() - this.lastPrune >= this.opts.pruneEveryMs) await this.prune();
    this.gauges();
  }

  private async replay(): Promise<void> {
    const before = this.spool.quarantinedSegments;
    try {
      const report = await this.spool.replay((r) => this.replayOne(r));
      if (report.records > 0) this.log.info('spool replayed', { ...report });
      this.lastReplayError = null;
    } catch (err) {
      this.metrics.errors.inc({ stage: 'replay' });
      if ((err as { cls?: string }).cls === 'retry') {
        // Down again (unreachable, or read-only after all): one line for the change of state, and the
        // probe decides when to try again.
        this.writer.markDown(downReason(err), err);
      } else {
        const text = errorText(err);
        if (text !== this.lastReplayError) this.log.warn('spool replay stopped; will retry', { error: err });
        this.lastReplayError = text;
      }
    } finally {
      const q = this.spool.quarantinedSegments - before;
      if (q > 0) this.metrics.spoolQuarantined.inc(q);
    }
  }

  private async replayOne(record: SpoolRecord): Promise<void> {
    try {
      await this.writer.replay(record);
    } catch (err) {
      if (!(err as { rejectRecord?: boolean }).rejectRecord) throw err;
      // The rows were acknowledged, so they are kept, loadable with COPY ... FROM '<file>' (FORMAT binary).
      await mkdir(this.opts.rejectDir, { recursive: true });
      const file = join(this.opts.rejectDir, `${record.batchId}.copy`);
      await writeFile(file, Buffer.concat([BINARY_HEADER, record.rows, BINARY_TRAILER]), { flush: true });
      await writeFile(`${file}.reason.txt`, `${errorText(err)}\nfacility_id=${record.facilityId} rows=${record.rowCount}\n`, { flush: true });
      this.metrics.rowsRejected.inc({ reason: 'replay_rejected' }, record.rowCount);
      this.log.error('spooled batch refused by the database; kept for an operator', { file, error: err });
    }
  }

  async prune(): Promise<number> {
    this.lastPrune = Date.now();
    let total = 0;
    try {
      for (;;) {
        const r = await this.db.query(PRUNE, [this.opts.ledgerRetention]);
        total += r.rowCount;
        if (r.rowCount < 10_000) break;
      }
      if (total > 0) this.log.info('ingest ledger pruned', { rows: total, olderThan: this.opts.ledgerRetention });
    } catch (err) {
      this.metrics.errors.inc({ stage: 'ledger' });
      this.log.warn('ingest ledger prune failed', { error: err });
    }
    return total;
  }
}
