// Per-facility batching: parts (a request's encoded rows, or a batch-sized piece of a larger
// request) gather until the batch holds `maxRows` rows or its oldest waiting part is `maxAgeMs`
// old, then one flush writes them as one batch. At most `maxInFlight` flushes of a facility run at
// once; parts arriving meanwhile wait for the next one (DESIGN §8.5). Several flushes in flight let
// the pieces of a large request be written by several writers at once; the writer's slots are
// shared between facilities in turn (fair-slots.ts).
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
  /** When each pending part arrived (ms), in the same order. */
  private arrived: number[] = [];
  private pendingRows = 0;
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

  /** When the oldest waiting part arrived. */
  private get firstAt(): number {
    return this.arrived[0] ?? Date.now();
  }

  add(part: Part): void {
    this.arrived.push(Date.now());
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
      this.arrived.shift();
      parts.push(p);
      rows += p.rowCount;
      bytes += p.rows.length;
    }
    this.pendingRows -= rows;
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
