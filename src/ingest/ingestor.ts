// From parsed points to durable rows: series ids (catalog cache), one binary encoding per request,
// the facility's batcher, and the request's outcome. Owns the queued-bytes bound (backpressure).
import { errorText } from '../errors.ts';
import type { Logger } from '../log.ts';
import { Batcher, type PartOutcome } from './batcher.ts';
import { classify } from './classify.ts';
import { TUPLE_BYTES, encodeTuples, type MetricRow } from './copy-encode.ts';
import type { LineError, ParseResult } from './lineprotocol.ts';
import type { IngestMetrics } from './metrics.ts';
import { pointKey, type SeriesCatalog, type SeriesKey } from './series.ts';
import type { Spool } from './spool.ts';
import type { Facility } from './types.ts';
import type { Writer } from './writer.ts';

export interface IngestorOptions {
  batchRows: number;
  batchAgeMs: number;
  maxQueueBytes: number;
  seriesLimit: number;
  /** Flushes of one facility in flight at once (default 2: a request larger than a batch is written by two writers). */
  flushesPerFacility?: number;
}

export interface AcceptResult {
  status: 204 | 400 | 429 | 500 | 503;
  written: number;
  /** Lines (or JSON metrics) refused whole or in part, with the reason. */
  rejected: LineError[];
  message?: string;
  retryAfter?: number;
}

/** A request's rows, encoded once, ready for its facility's batcher. */
export interface Prepared {
  encoded: Buffer;
  rowCount: number;
  rejected: LineError[];
}

export interface Pressure {
  status: 429 | 503;
  retryAfter: number;
  message: string;
}

const floorDiv = (a: bigint, b: bigint) => (a >= 0n ? a / b : -((-a + b - 1n) / b));

export class Ingestor {
  queuedBytes = 0;
  private batchers = new Map<number, Batcher>();

  constructor(
    private readonly series: SeriesCatalog,
    private readonly writer: Writer,
    private readonly spool: Spool,
    private readonly metrics: IngestMetrics,
    private readonly log: Logger,
    private readonly opts: IngestorOptions,
  ) {}

  /** Whether a request of about `bytes` more would overflow what the gateway may hold in memory. */
  pressure(bytes = 0): Pressure | null {
    if (this.queuedBytes + bytes <= this.opts.maxQueueBytes) return null;
    if (this.writer.down && this.spool.wouldOverflow(bytes)) {
      return { status: 503, retryAfter: 30, message: 'the database is unreachable and the spool is full; retry later' };
    }
    return { status: 429, retryAfter: 1, message: `the gateway's queue is full (${this.queuedBytes} of ${this.opts.maxQueueBytes} bytes); retry later` };
  }

  private batcher(facilityId: number): Batcher {
    let b = this.batchers.get(facilityId);
    if (!b) {
      b = new Batcher(facilityId, { maxRows: this.opts.batchRows, maxAgeMs: this.opts.batchAgeMs, maxInFlight: this.opts.flushesPerFacility ?? 2 }, (batch) => this.writer.write(batch));
      this.batchers.set(facilityId, b);
    }
    return b;
  }

  /**
   * Series ids and the one binary encoding of a request's rows. What it returns holds no parsed
   * points, so a caller that drops its own reference to them frees them before waiting in the queue.
   */
  async prepare(facility: Facility, parsed: ParseResult, receiveNs: bigint): Promise<Prepared | AcceptResult> {
    const rejected = [...parsed.errors, ...parsed.fieldErrors];
    const strings: string[] = [];
    for (const p of parsed.points) {
      const prefix = pointKey(p.measurement, p.tags);
      for (const f of p.fields) strings.push(prefix + f.key);
    }
    let ids: (number | null)[] | null = this.series.cached(facility.id, strings);
    if (!ids) {
      const keys: SeriesKey[] = [];
      for (const p of parsed.points) for (const f of p.fields) keys.push({ measurement: p.measurement, field: f.key, tags: p.tags });
      try {
        const r = await this.series.resolve(facility.id, keys);
        ids = r.ids;
        if (r.created) this.metrics.seriesCreated.inc(r.created);
      } catch (err) {
        this.metrics.errors.inc({ stage: 'series' });
        const retry = classify(err) === 'retry';
        if (!retry) this.log.error('series catalog error', { facility: facility.code, error: err });
        return retry
          ? { status: 503, written: 0, rejected: [], retryAfter: 5, message: `the database is unreachable and this request names series the gateway has not cached yet; retry later (${errorText(err)})` }
          : { status: 500, written: 0, rejected: [], message: `series catalog error: ${errorText(err)}` };
      }
    }
    const rows: MetricRow[] = [];
    let k = 0;
    let overLimit = 0;
    for (const p of parsed.points) {
      const timeUs = floorDiv(p.timeNs ?? receiveNs, 1000n);
      let refused: string | null = null;
      for (const f of p.fields) {
        const id = ids[k++];
        if (id === null || id === undefined) {
          refused ??= f.key;
          continue;
        }
        rows.push({ timeUs, facilityId: facility.id, seriesId: id, value: f.value });
      }
      if (refused !== null) {
        overLimit++;
        rejected.push({ line: p.line, reason: `series limit of ${this.opts.seriesLimit} reached for facility ${facility.code}: new series ${p.measurement}.${refused} not created` });
      }
    }
    rejected.sort((a, b) => a.line - b.line);
    this.metrics.rowsReceived.inc({ facility: facility.code }, rows.length);
    if (parsed.errors.length) this.metrics.rowsRejected.inc({ reason: 'bad_line' }, parsed.errors.length);
    if (parsed.fieldErrors.length) this.metrics.rowsRejected.inc({ reason: 'bad_field' }, parsed.fieldErrors.length);
    if (overLimit) this.metrics.rowsRejected.inc({ reason: 'series_limit' }, overLimit);
    if (rows.length === 0) return { status: rejected.length ? 400 : 204, written: 0, rejected };

    const pressure = this.pressure(rows.length * TUPLE_BYTES);
    if (pressure) return { status: pressure.status, written: 0, rejected: [], message: pressure.message, retryAfter: pressure.retryAfter };
    return { encoded: encodeTuples(rows), rowCount: rows.length, rejected };
  }

  /** Queues prepared rows in the facility's batcher; resolves once they are durable (or refused). */
  async enqueue(facility: Facility, prepared: Prepared): Promise<AcceptResult> {
    const { encoded, rowCount, rejected } = prepared;
    const bytes = encoded.length;
    this.queuedBytes += bytes;
    this.metrics.queuedBytes.set(this.queuedBytes);
    const started = performance.now();
    const outcome = await new Promise<PartOutcome>((done) => this.batcher(facility.id).add({ rows: encoded, rowCount, done }));
    this.queuedBytes -= bytes;
    this.metrics.queuedBytes.set(this.queuedBytes);
    if (!outcome.ok) return { status: outcome.status as AcceptResult['status'], written: 0, rejected, message: outcome.message, ...(outcome.status === 503 ? { retryAfter: 30 } : {}) };
    this.metrics.ackSeconds.observe((performance.now() - started) / 1000);
    return { status: rejected.length ? 400 : 204, written: rowCount, rejected };
  }

  /** Flushes every facility's pending rows and waits until each batch is committed, spooled or refused. */
  async drain(): Promise<void> {
    await Promise.all([...this.batchers.values()].map((b) => b.drain()));
  }
}
