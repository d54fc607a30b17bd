// `strata size` arguments → a report (text or JSON). Bad arguments are usage errors naming the option.
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { UsageError } from '../errors.ts';
import { measuredFigures } from './measured.ts';
import { parseBytes } from '../units.ts';
import { formatSize, size, type Measured, type SizeInput } from './size.ts';

function whole(name: string, text: string | undefined, fallback: number | undefined, min = 1): number {
  if (text === undefined) {
    if (fallback === undefined) throw new UsageError(`strata size: --${name} is required`);
    return fallback;
  }
  const v = Number(text.replace(/_/g, ''));
  if (!Number.isInteger(v) || v < min) throw new UsageError(`strata size: --${name} ${JSON.stringify(text)} must be a whole number of at least ${min}`);
  return v;
}

/** The figures shipped with Strata (refreshed from bench/results by bench/size-figures.ts). */
export function shippedFigures(): Measured {
  return JSON.parse(readFileSync(new URL('./figures.json', import.meta.url), 'utf8')) as Measured;
}

export function sizeCommand(args: string[]): string {
  const { values } = parseArgs({
    args,
    options: {
      rate: { type: 'string' },
      facilities: { type: 'string' },
      series: { type: 'string' },
      memory: { type: 'string' },
      'hot-days': { type: 'string' },
      'warm-days': { type: 'string' },
      'cold-days': { type: 'string' },
      'archive-years': { type: 'string' },
      results: { type: 'string' },
      'ingest-mode': { type: 'string', default: 'columnstore' },
      json: { type: 'boolean' },
    },
  });
  if (values.memory === undefined) throw new UsageError('strata size: --memory is required (the database server\'s RAM, e.g. 512GiB)');
  const memoryBytes = parseBytes(values.memory);
  if (!memoryBytes) throw new UsageError(`strata size: --memory ${JSON.stringify(values.memory)} is not a size such as 512GiB, 64GB or 1TiB`);
  const mode = values['ingest-mode'];
  if (mode !== 'rowstore' && mode !== 'columnstore') throw new UsageError(`strata size: --ingest-mode ${JSON.stringify(mode)} must be rowstore or columnstore (STRATA_INGEST_MODE)`);
  const input: SizeInput = {
    rate: whole('rate', values.rate, undefined),
    facilities: whole('facilities', values.facilities, undefined),
    seriesPerFacility: whole('series', values.series, 1_000),
    memoryBytes,
    hotDays: whole('hot-days', values['hot-days'], 30, 0),
    warmDays: whole('warm-days', values['warm-days'], 150, 0),
    coldDays: whole('cold-days', values['cold-days'], 365, 0),
    archiveYears: whole('archive-years', values['archive-years'], 7, 0),
    ingestMode: mode,
  };
  const report = size(input, values.results === undefined ? shippedFigures() : measuredFigures(values.results));
  return values.json ? JSON.stringify(report, null, 2) : formatSize(report);
}
