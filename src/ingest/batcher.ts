// Per-facility batching: parts (one request's encoded rows each) gather until the batch holds
// `maxRows` rows or its oldest part is `maxAgeMs` old, then one flush writes them as one batch.
// At most `maxInFlight` flushes of a facility run at once; parts arriving meanwhile wait for the
// next one (DESIGN §8.5). A second flush in flight lets a request larger than a batch be written
// by two writers at once instead of one batch after another.
import { randomUUID } from 'node:crypto';

export type PartOutcome = { ok: true; via: 'db' | 'spool' } | { ok: false; status: number; message: string };

export interface Part {
  /** Binary COPY tuples of this request's rows. */
  rows: Buffer;
  rowCount: number;
  done(outcome: PartOutcome): void;
}

export interface Batch {
  id: string;
  facilityId: number;
  parts: Part[];
  rowCount: number;
  bytes: number;
}

export interface BatcherOptions {
  maxRows: number;
  maxAgeMs: number;
  /** Flushes of this facility in flight at once (default 1). */
  maxInFlight?: number;
}

export class Batcher {
  private pending: Part[] = [];
  private pendingRows = 0;
  private firstAt = 0;
  private timer: NodeJS.Timeout | null = null;
  private inFlight = new Set<Promise<void>>();

  constructor(
    readonly facilityId: number,
    private readonly opts: BatcherOptions,
    private readonly flush: (batch: Batch) => Promise<void>,
  ) {}

  get queuedRows(): number {
    return this.pendingRows;
  }

  add(part: Part): void {
    if (this.pending.length === 0) this.firstAt = Date.now();
    this.pending.push(part);
    this.pendingRows += part.rowCount;
    this.schedule();
  }

  /** Flushes everything pending and waits until no flush is in flight. */
  async drain(): Promise<void> {
    while (this.inFlight.size > 0 || this.pending.length > 0) {
      if (this.pending.length > 0 && this.inFlight.size < this.limit) this.start();
      else await Promise.race(this.inFlight);
    }
  }

  private get limit(): number {
    return this.opts.maxInFlight ?? 1;
  }

  private schedule(): void {
    while (this.pending.length > 0 && this.inFlight.size < this.limit && (this.pendingRows >= this.opts.maxRows || Date.now() - this.firstAt >= this.opts.maxAgeMs)) {
      this.start();
    }
    if (this.pending.length === 0 || this.inFlight.size >= this.limit) return;
    const age = Date.now() - this.firstAt;
    if (!this.timer) {
      this.timer = setTimeout(() => {
        this.timer = null;
        this.schedule();
      }, this.opts.maxAgeMs - age);
    }
  }

  private take(): Batch {
    const parts: Part[] = [];
    let rows = 0;
    let bytes = 0;
    // A batch holds whole parts, up to maxRows rows (a single larger part goes alone).
    while (this.pending.length > 0 && (parts.length === 0 || rows + this.pending[0]!.rowCount <= this.opts.maxRows)) {
      const p = this.pending.shift()!;
      parts.push(p);
      rows += p.rowCount;
      bytes += p.rows.length;
    }
    this.pendingRows -= rows;
    this.firstAt = Date.now();
    return { id: randomUUID(), facilityId: this.facilityId, parts, rowCount: rows, bytes };
  }

  private start(): void {
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    const batch = this.take();
    const flight: Promise<void> = this.flush(batch)
      .catch((err: unknown) => {
        // The writer settles every part itself; this only guards against a bug leaving one unsettled.
        for (const p of batch.parts) p.done({ ok: false, status: 500, message: `internal error: ${String(err)}` });
      })
      .finally(() => {
        this.inFlight.delete(flight);
        this.schedule();
      });
    this.inFlight.add(flight);
  }
}
