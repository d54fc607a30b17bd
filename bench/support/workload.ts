// The workload of DESIGN §1 as Telegraf would send it: F facilities × S series each, as line protocol
// batches. A facility's series are tag sets × `fields` fields, so one line carries `fields` metrics:
//   fields > 1: `machine,line=<l>,unit=<u> f0=…,f1=…,…` with sensor-like values by field — slowly
//               varying floats (two decimals), monotonically increasing counters (`i`) and booleans;
//   fields = 1: the single-value sensor shape `sensor,line=L3,cell=C7 value=12.345 <time>` (tags not
//               in sorted order, one float with three decimals).
// Timestamps are in the batch's precision (`ns` or `ms`), which the request's `precision` parameter names.
import { gzipSync } from 'node:zlib';

export type Precision = 'ns' | 'ms';

export interface Workload {
  facilities: number;
  seriesPerFacility: number;
  /** Lines per request (Telegraf's metric_batch_size). */
  linesPerBatch: number;
  gzip: boolean;
  /** Fields (metrics) per line; 1 is the single-value sensor shape. Default FIELDS. */
  fields?: number;
  /** Timestamp precision of the lines and of the request's `precision` parameter. Default `ns`. */
  precision?: Precision;
}

/** Fields per line when a workload does not say. */
export const FIELDS = 10;

export const fieldsOf = (w: Workload): number => w.fields ?? FIELDS;
export const precisionOf = (w: Workload): Precision => w.precision ?? 'ns';

export interface Batch {
  facility: number;
  body: Buffer;
  lines: number;
  /** Metrics (rows) the batch carries. */
  rows: number;
}

function fieldValue(field: number, unit: number, tick: number): string {
  switch (field % 3) {
    case 0:
      return (20 + 5 * Math.sin(tick / 360 + unit + field)).toFixed(2);
    case 1:
      return `${tick * (field + 1) + unit}i`;
    default:
      return Math.floor(tick / 60 + unit) % 2 === 0 ? 'true' : 'false';
  }
}

/** Tag sets of one facility: its series over the fields of a line. */
export function tagSets(w: Workload): number {
  return Math.max(1, Math.floor(w.seriesPerFacility / fieldsOf(w)));
}

/**
 * The `round`-th batch of facility `facility`: `linesPerBatch` lines walking over the facility's tag
 * sets, each tag set one sample further in time (10 s apart) every time it comes round.
 */
export function makeBatch(w: Workload, facility: number, round: number, startMs: number): Batch {
  const sets = tagSets(w);
  const fieldCount = fieldsOf(w);
  const suffix = precisionOf(w) === 'ns' ? '000000' : '';
  const lines: string[] = new Array(w.linesPerBatch);
  for (let i = 0; i < w.linesPerBatch; i++) {
    const n = round * w.linesPerBatch + i;
    const unit = n % sets;
    const tick = Math.floor(n / sets);
    const time = `${startMs + tick * 10_000}${suffix}`;
    if (fieldCount === 1) {
      lines[i] = `sensor,line=L${unit % 10},cell=C${Math.floor(unit / 10)} value=${(12 + 5 * Math.sin(tick / 360 + unit)).toFixed(3)} ${time}`;
      continue;
    }
    let fields = '';
    for (let f = 0; f < fieldCount; f++) fields += `${f ? ',' : ''}f${f}=${fieldValue(f, unit, tick)}`;
    lines[i] = `machine,line=l${unit % 10},unit=u${unit} ${fields} ${time}`;
  }
  const text = lines.join('\n') + '\n';
  return { facility, body: w.gzip ? gzipSync(text) : Buffer.from(text), lines: w.linesPerBatch, rows: w.linesPerBatch * fieldCount };
}
