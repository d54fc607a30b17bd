// From parsed points to durable rows: series ids (catalog cache), one binary encoding per request,
// the facility's batcher, and the request's outcome. Owns the queued-bytes bound (backpressure).
import { errorText } from '../errors.ts';
import type { Logger } from '../log.ts';
import { Batcher, type PartOutcome } from './batcher.ts';
import { classify } from './classify.ts';
import { TUPLE_BYTES, encodeTuples, type MetricRow } from './copy-encode.ts';
import { LineEncoder } from './line-encoder.ts';
import { MAX_LINE_BYTES, type LineError, type ParseResult, type Precision } from './lineprotocol.ts';
import type { IngestMetrics } from './metrics.ts';
import type { Resolved, SeriesCatalog, SeriesKey } from './series.ts';
import type { Spool } from './spool.ts';
import { OPEN_WINDOW, bounds, outside, type Bounds, type TimeWindow } from './time-window.ts';
import type { Facility } from './types.ts';
import type { Writer } from './writer.ts';

export interface IngestorOptions {
  batchRows: number;
  batchAgeMs: number;
  maxQueueBytes: number;
  /** Lines longer than this many bytes are rejected (default 1 MiB). */
  maxLineBytes?: number;
  /** Flushes of one facility in flight at once (default 2: a request larger than a batch is written by two writers). */
  flushesPerFacility?: number;
  /** How far in the past and future a timestamp may be; default: any. */
  timeWindow?: TimeWindow;
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

const EMPTY = Buffer.alloc(0);
/** Points resolved against the series catalog at once (see prepare()). */
const POINTS_PER_SLICE = 20_000;
const floorDiv = (a: bigint, b: bigint) => (a >= 0n ? a / b : -((-a + b - 1n) / b));

export class Ingestor {
  queuedBytes = 0;
  private batchers = new Map<number, Batcher>();
  /** One encoder (and its slab) for the gateway: encoding is synchronous, so requests never share it at once. */
  private readonly encoder = new LineEncoder();

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
   * A line-protocol body: the fast path encodes the lines whose series are cached, the rest are
   * parsed in full and their series resolved. The result holds no parsed points, so the body and
   * everything parsed from it are garbage once this returns.
   */
  async prepareLines(facility: Facility, body: Buffer, precision: Precision, receiveUs: number): Promise<Prepared | AcceptResult> {
    const window = bounds(this.window, receiveUs);
    const encoded = this.encoder.encode(body, precision, facility.id, this.series.index(facility.id), receiveUs, this.opts.maxLineBytes ?? MAX_LINE_BYTES, this.series.aliasRoom(facility.id), window);
    return this.prepare(facility, encoded, encoded.tuples, encoded.rows, receiveUs, window);
  }

  /** Parsed points (the JSON endpoint): series ids, then one binary encoding. */
  preparePoints(facility: Facility, parsed: ParseResult, receiveUs: number): Promise<Prepared | AcceptResult> {
    return this.prepare(facility, parsed, EMPTY, 0, receiveUs, bounds(this.window, receiveUs));
  }

  private get window(): TimeWindow {
    return this.opts.timeWindow ?? OPEN_WINDOW;
  }

  /** Points outside the accepted time window are refused before they can name a series. */
  private insideWindow(parsed: ParseResult, window: Bounds, receive: bigint, rejected: LineError[]): ParseResult['points'] {
    if (this.window === OPEN_WINDOW) return parsed.points;
    const inside: ParseResult['points'] = [];
    for (const p of parsed.points) {
      const reason = outside(this.window, window, Number(p.timeNs === null ? receive : floorDiv(p.timeNs, 1000n)));
      if (reason === null) inside.push(p);
      else rejected.push({ line: p.line, reason });
    }
    return inside;
  }

  private async prepare(facility: Facility, parsed: ParseResult, fast: Buffer, fastRows: number, receiveUs: number, window: Bounds): Promise<Prepared | AcceptResult> {
    const rejected = [...parsed.errors, ...parsed.fieldErrors];
    const receive = BigInt(receiveUs);
    const before = rejected.length;
    const points = this.insideWindow(parsed, window, receive, rejected);
    const outsideWindow = rejected.length - before;
    const slow: Buffer[] = [];
    let slowRows = 0;
    let overLimit = 0;
    let refusedLines = 0;
    // Points needing the catalog, a slice at a time, so a request of many new series holds the keys
    // and rows of one slice at once.
    for (let from = 0; from < points.length; from += POINTS_PER_SLICE) {
      const slice = points.slice(from, from + POINTS_PER_SLICE);
      const keys: SeriesKey[] = [];
      for (const p of slice) for (const f of p.fields) keys.push({ measurement: p.measurement, field: f.key, tags: p.tags });
      let resolved: Resolved;
      try {
        resolved = await this.series.resolve(facility.id, facility.code, keys);
      } catch (err) {
        this.metrics.errors.inc({ stage: 'series' });
        const retry = classify(err) === 'retry';
        if (!retry) this.log.error('series catalog error', { facility: facility.code, error: err });
        return retry
          ? { status: 503, written: 0, rejected: [], retryAfter: 5, message: `the database is unreachable and this request names series the gateway has not cached yet; retry later (${errorText(err)})` }
          : { status: 500, written: 0, rejected: [], message: `series catalog error: ${errorText(err)}` };
      }
      if (resolved.created) this.metrics.seriesCreated.inc(resolved.created);
      const rows: MetricRow[] = [];
      let k = 0;
      for (const p of slice) {
        const timeUs = p.timeNs === null ? receive : floorDiv(p.timeNs, 1000n);
        let reason: string | null = null;
        let limited = false;
        for (const f of p.fields) {
          const id = resolved.ids[k];
          if (id === null || id === undefined) {
            reason ??= resolved.reasons[k] ?? 'series could not be created';
            limited ||= resolved.limited[k] === true;
          } else {
            rows.push({ timeUs, facilityId: facility.id, seriesId: id, value: f.value });
          }
          k++;
        }
        if (reason !== null) {
          if (limited) overLimit++;
          else refusedLines++;
          rejected.push({ line: p.line, reason });
        }
      }
      if (rows.length > 0) slow.push(encodeTuples(rows));
      slowRows += rows.length;
    }
    rejected.sort((a, b) => a.line - b.line);
    const rowCount = fastRows + slowRows;
    this.metrics.rowsReceived.inc({ facility: facility.code }, rowCount);
    if (parsed.errors.length) this.metrics.rowsRejected.inc({ reason: 'bad_line' }, parsed.errors.length);
    if (parsed.fieldErrors.length) this.metrics.rowsRejected.inc({ reason: 'bad_field' }, parsed.fieldErrors.length);
    if (overLimit) this.metrics.rowsRejected.inc({ reason: 'series_limit' }, overLimit);
    if (refusedLines) this.metrics.rowsRejected.inc({ reason: 'series_refused' }, refusedLines);
    if (outsideWindow) this.metrics.rowsRejected.inc({ reason: 'time_window' }, outsideWindow);
    if (rowCount === 0) return { status: rejected.length ? 400 : 204, written: 0, rejected };

    const pressure = this.pressure(rowCount * TUPLE_BYTES);
    if (pressure) return { status: pressure.status, written: 0, rejected: [], message: pressure.message, retryAfter: pressure.retryAfter };
    const encoded = slow.length === 0 ? fast : fastRows === 0 && slow.length === 1 ? slow[0]! : Buffer.concat([fast, ...slow]);
    return { encoded, rowCount, rejected };
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
