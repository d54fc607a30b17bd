// From parsed points to durable rows: series ids (catalog cache), one binary encoding per request,
// the facility's batcher, and the request's outcome. Owns the queued-bytes bound (backpressure),
// shared between facilities so that one cannot take the room of the others.
import { errorText } from '../errors.ts';
import type { Logger } from '../log.ts';
import { Batcher, type PartOutcome } from './batcher.ts';
import { classify } from './classify.ts';
import { TUPLE_BYTES, encodeTuples, type MetricRow } from './copy-encode.ts';
import { FairSlots } from './fair-slots.ts';
import { LineEncoder, type Encoded } from './line-encoder.ts';
import { mergeEncoded, renumber, sliceLines } from './line-slices.ts';
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
  /** Flushes of one facility in flight at once (default 4, the writers: a facility alone may use every writer). */
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
/** The part of the queue a facility over its share cannot take while others are queued. */
const RESERVED = 0.25;
/** Body bytes encoded in one turn (line-slices.ts): a few ms of parsing, so other facilities wait no longer. */
const SLICE_BYTES = 64 << 10;
/** Points resolved against the series catalog at once (see prepare()). */
const POINTS_PER_SLICE = 20_000;
const floorDiv = (a: bigint, b: bigint) => (a >= 0n ? a / b : -((-a + b - 1n) / b));

export class Ingestor {
  queuedBytes = 0;
  private batchers = new Map<number, Batcher>();
  /** One encoder (and its slab) for the gateway: encoding is synchronous, so requests never share it at once. */
  private readonly encoder = new LineEncoder();
  /** Turns at encoding a body slice, round robin between facilities. */
  private readonly turns = new FairSlots(1);

  constructor(
    private readonly series: SeriesCatalog,
    private readonly writer: Writer,
    private readonly spool: Spool,
    private readonly metrics: IngestMetrics,
    private readonly log: Logger,
    private readonly opts: IngestorOptions,
  ) {}

  /** Bytes being received (bodies not parsed yet), all facilities. */
  private receiving = 0;
  /** What each facility holds, received and queued; a facility is present only while it holds bytes. */
  private readonly held = new Map<number, number>();

  /**
   * Whether `bytes` more would overflow what the gateway may hold in memory, or, for `facilityId`,
   * more than it may hold while others wait. The queue is shared: while it is more than
   * 1 − RESERVED full, a facility holding more than its share (the budget over the facilities
   * holding bytes, itself included) is refused, and no facility ever holds more than 1 − RESERVED
   * of it. A saturating facility therefore leaves room for the others: one within its share is
   * refused only when the whole queue is full.
   */
  pressure(bytes = 0, facilityId?: number): Pressure | null {
    const max = this.opts.maxQueueBytes;
    const total = this.queuedBytes + this.receiving + bytes;
    if (total <= max && facilityId !== undefined) {
      const own = (this.held.get(facilityId) ?? 0) + bytes;
      const share = max / (this.held.size + (this.held.has(facilityId) ? 0 : 1));
      const cap = max * (1 - RESERVED);
      if (own > cap || (own > share && total > cap)) {
        return { status: 429, retryAfter: 1, message: `this facility holds ${own - bytes} bytes of the gateway's queue, over its share of ${Math.floor(Math.min(share, cap))} while ${this.held.size} facilities are queued (${total - bytes} of ${max} bytes in use); retry later` };
      }
    }
    if (total <= max) return null;
    if (this.writer.down && this.spool.wouldOverflow(bytes)) {
      return { status: 503, retryAfter: 30, message: 'the database is unreachable and the spool is full; retry later' };
    }
    return { status: 429, retryAfter: 1, message: `the gateway's queue is full (${total - bytes} of ${max} bytes); retry later` };
  }

  /** Counts `n` bytes of a body being received against the facility's share; false (nothing counted) under pressure. */
  reserve(facilityId: number, n: number): boolean {
    if (this.pressure(n, facilityId)) return false;
    this.receiving += n;
    this.hold(facilityId, n);
    return true;
  }

  /** Gives back bytes of reserve() once the body is parsed or refused. */
  release(facilityId: number, n: number): void {
    this.receiving -= n;
    this.hold(facilityId, -n);
  }

  private hold(facilityId: number, n: number): void {
    const now = (this.held.get(facilityId) ?? 0) + n;
    if (now > 0) this.held.set(facilityId, now);
    else this.held.delete(facilityId);
  }

  private batcher(facilityId: number): Batcher {
    let b = this.batchers.get(facilityId);
    if (!b) {
      b = new Batcher(facilityId, { maxRows: this.opts.batchRows, maxAgeMs: this.opts.batchAgeMs, maxInFlight: this.opts.flushesPerFacility ?? 4 }, (batch) => this.writer.write(batch));
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
    const maxLine = this.opts.maxLineBytes ?? MAX_LINE_BYTES;
    const slices = sliceLines(body, SLICE_BYTES);
    const parts: Encoded[] = [];
    for (const slice of slices) {
      // A slice at a time, in turn with other facilities' slices: a large body cannot hold the
      // event loop (and so the other facilities' requests) for the whole of its parse. Only a later
      // slice yields first; a body of one slice costs no extra turn of the event loop.
      await this.turns.acquire(facility.id);
      try {
        if (slice.start > 0) await new Promise((r) => setImmediate(r));
        const encoded = this.encoder.encode(body.subarray(slice.start, slice.end), precision, facility.id, this.series.index(facility.id), receiveUs, maxLine, this.series.aliasRoom(facility.id), window);
        parts.push(slice.lineOffset === 0 ? encoded : renumber(encoded, slice.lineOffset));
      } finally {
        this.turns.release(facility.id);
      }
    }
    const encoded = parts.length === 1 ? parts[0]! : mergeEncoded(parts);
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

    const pressure = this.pressure(rowCount * TUPLE_BYTES, facility.id);
    if (pressure) return { status: pressure.status, written: 0, rejected: [], message: pressure.message, retryAfter: pressure.retryAfter };
    const encoded = slow.length === 0 ? fast : fastRows === 0 && slow.length === 1 ? slow[0]! : Buffer.concat([fast, ...slow]);
    return { encoded, rowCount, rejected };
  }

  /**
   * Queues prepared rows in the facility's batcher; resolves once they are durable (or refused).
   * Rows of more than one batch are queued as batch-sized pieces, so several writers take them at
   * once; the request succeeds when every piece does.
   */
  async enqueue(facility: Facility, prepared: Prepared): Promise<AcceptResult> {
    const { encoded, rowCount, rejected } = prepared;
    const started = performance.now();
    const per = Math.max(1, this.opts.batchRows);
    const pieces: Promise<PartOutcome>[] = [];
    for (let from = 0; from < rowCount; from += per) {
      const rows = Math.min(per, rowCount - from);
      const bytes = rows * TUPLE_BYTES;
      const piece = rowCount <= per ? encoded : encoded.subarray(from * TUPLE_BYTES, from * TUPLE_BYTES + bytes);
      this.queuedBytes += piece.length;
      this.hold(facility.id, piece.length);
      pieces.push(
        new Promise<PartOutcome>((done) => this.batcher(facility.id).add({ rows: piece, rowCount: rows, done })).then((outcome) => {
          this.queuedBytes -= piece.length;
          this.hold(facility.id, -piece.length);
          this.metrics.queuedBytes.set(this.queuedBytes);
          return outcome;
        }),
      );
    }
    this.metrics.queuedBytes.set(this.queuedBytes);
    const outcomes = await Promise.all(pieces);
    const failed = outcomes.find((o): o is Extract<PartOutcome, { ok: false }> => !o.ok);
    if (failed) {
      const written = outcomes.reduce((n, o, i) => (o.ok ? n + Math.min(per, rowCount - i * per) : n), 0);
      const message = written > 0 ? `${failed.message} (${written} of this request's ${rowCount} rows were written)` : failed.message;
      return { status: failed.status as AcceptResult['status'], written, rejected, message, ...(failed.status === 503 ? { retryAfter: 30 } : {}) };
    }
    this.metrics.ackSeconds.observe((performance.now() - started) / 1000);
    return { status: rejected.length ? 400 : 204, written: rowCount, rejected };
  }

  /** Flushes every facility's pending rows and waits until each batch is committed, spooled or refused. */
  async drain(): Promise<void> {
    await Promise.all([...this.batchers.values()].map((b) => b.drain()));
  }
}
