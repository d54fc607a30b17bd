// The workload of DESIGN §1 as Telegraf would send it: F facilities × S series each, as line protocol
// batches. A facility's series are `machine,line=<l>,unit=<u>` tag sets × FIELDS fields, so one line
// carries FIELDS metrics. Values are sensor-like: slowly varying floats (two decimals), monotonically
// increasing counters (`i`) and booleans, by field.
import { gzipSync } from 'node:zlib';

export const FIELDS = 10;

export interface Workload {
  facilities: number;
  seriesPerFacility: number;
  /** Lines per request (Telegraf's metric_batch_size). */
  linesPerBatch: number;
  gzip: boolean;
}

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

/**
 * The `round`-th batch of facility `facility`: `linesPerBatch` lines walking over the facility's tag
 * sets, each tag set one sample further in time (10 s apart) every time it comes round.
 */
export function makeBatch(w: Workload, facility: number, round: number, startMs: number): Batch {
  const tagSets = Math.max(1, Math.floor(w.seriesPerFacility / FIELDS));
  const lines: string[] = new Array(w.linesPerBatch);
  for (let i = 0; i < w.linesPerBatch; i++) {
    const n = round * w.linesPerBatch + i;
    const unit = n % tagSets;
    const tick = Math.floor(n / tagSets);
    let fields = '';
    for (let f = 0; f < FIELDS; f++) fields += `${f ? ',' : ''}f${f}=${fieldValue(f, unit, tick)}`;
    lines[i] = `machine,line=l${unit % 10},unit=u${unit} ${fields} ${startMs + tick * 10_000}000000`;
  }
  const text = lines.join('\n') + '\n';
  return { facility, body: w.gzip ? gzipSync(text) : Buffer.from(text), lines: w.linesPerBatch, rows: w.linesPerBatch * FIELDS };
}
