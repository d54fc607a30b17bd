// `strata size`: what a region needs for a given ingest rate, from measured figures (bench/results)
// or, where none was measured, DESIGN §1's assumptions, each figure labelled with its source.
// Pure computation; measured.ts reads the figures.
import { bytes } from '../units.ts';

export interface Figure {
  value: number;
  /** Where the figure comes from: a results file and its command, or "assumed: …". */
  source: string;
}

export interface Measured {
  /** Bytes per row on disk uncompressed, table and indexes. */
  bytesPerRow: Figure;
  /** Index bytes per row (the chunk-interval rule). */
  indexBytesPerRow: Figure;
  compressionRatio: Figure;
  /** The cold tier's (merged and recompressed chunks). */
  coldCompressionRatio: Figure;
  /** Bytes per row of the archive objects (tar.gz of CSV). */
  archiveBytesPerRow: Figure;
  walBytesPerRow: Figure;
  /** With STRATA_INGEST_MODE=columnstore: bytes on disk and WAL per row of rows written compressed (the harness's design workload). */
  columnstoreBytesPerRow: Figure;
  columnstoreWalBytesPerRow: Figure;
  /** …and after the tiering worker compacted them (STRATA_TIER_HOT_COMPACT_AFTER): bytes on disk, and the WAL the compaction writes. */
  columnstoreCompactedBytesPerRow: Figure;
  columnstoreCompactionWalBytesPerRow: Figure;
  /** Gateway CPU per metric, µs. */
  gatewayCpuUsPerRow: Figure;
  /** Rows/s one binary COPY stream sustains. */
  copyRowsPerStream: Figure;
}

export interface SizeInput {
  rate: number;
  facilities: number;
  seriesPerFacility: number;
  memoryBytes: number;
  hotDays: number;
  warmDays: number;
  coldDays: number;
  archiveYears: number;
  /** STRATA_INGEST_MODE of the gateways: the hot tier's bytes and the WAL follow it. */
  ingestMode: 'rowstore' | 'columnstore';
}

export interface SizeReport {
  input: SizeInput;
  rowsPerDay: number;
  series: number;
  tiers: { name: string; days: number; bytes: number; note: string }[];
  chunkInterval: { seconds: number; text: string; indexBytes: number; limitBytes: number; fits: boolean };
  walBytesPerDay: number;
  gateway: { cores: number; processes: number };
  writers: { streams: number; perGateway: number; pgbouncerPoolSize: number };
  archive: { objectsPerYear: number; objects: number };
  measured: Measured;
}

const CANDIDATES: [number, string][] = [
  [60, '1 minute'], [300, '5 minutes'], [600, '10 minutes'], [900, '15 minutes'], [1800, '30 minutes'],
  [3600, '1 hour'], [7200, '2 hours'], [14400, '4 hours'], [21600, '6 hours'], [43200, '12 hours'], [86400, '1 day'], [604800, '7 days'],
];

/** Gateway processes (one per core: `strata serve --processes N`) run at most this busy, so bursts and GC have room. */
export const GATEWAY_UTILISATION = 0.7;
/** COPY streams are planned at half of what one stream sustains alone. */
export const STREAM_UTILISATION = 0.5;
/** STRATA_WRITERS's default. */
export const DEFAULT_WRITERS = 4;

export function size(input: SizeInput, m: Measured): SizeReport {
  const rowsPerDay = input.rate * 86_400;
  const perRow = m.bytesPerRow.value;
  const ratio = m.compressionRatio.value;
  const columnstore = input.ingestMode === 'columnstore';
  // Timescale's rule: the indexes of the chunks being written fit in 25% of memory.
  const limitBytes = input.memoryBytes * 0.25;
  const perSecond = input.rate * m.indexBytesPerRow.value;
  const fitting = CANDIDATES.filter(([s]) => s * perSecond <= limitBytes);
  const [seconds, text] = fitting.at(-1) ?? CANDIDATES[0]!;
  // Written compressed, a chunk is compacted by the first hourly tiering run an hour after its end:
  // the newest chunk interval plus up to two hours stay as written, the rest compacted.
  const asWrittenRows = Math.min(rowsPerDay * input.hotDays, input.rate * (seconds + 2 * 3_600));
  const compactedHot = rowsPerDay * input.hotDays * m.columnstoreCompactedBytesPerRow.value + asWrittenRows * Math.max(0, m.columnstoreBytesPerRow.value - m.columnstoreCompactedBytesPerRow.value);
  const tiers = [
    columnstore
      ? { name: 'hot (compressed)', days: input.hotDays, bytes: compactedHot, note: 'default tablespace; written compressed (STRATA_INGEST_MODE=columnstore), compacted an hour after each chunk ends' }
      : { name: 'hot (uncompressed)', days: input.hotDays, bytes: rowsPerDay * input.hotDays * perRow, note: 'default tablespace' },
    { name: 'warm (compressed)', days: input.warmDays, bytes: (rowsPerDay * input.warmDays * perRow) / ratio, note: 'warm_data' },
    { name: 'cold (compressed)', days: input.coldDays, bytes: (rowsPerDay * input.coldDays * perRow) / m.coldCompressionRatio.value, note: 'cold_data, merged per day and recompressed' },
    { name: 'archive (S3 Glacier)', days: input.archiveYears * 365, bytes: rowsPerDay * input.archiveYears * 365 * m.archiveBytesPerRow.value, note: 'tar.gz of CSV per chunk, kept in S3' },
  ];
  const cores = (input.rate * m.gatewayCpuUsPerRow.value) / 1e6;
  const processes = Math.max(1, Math.ceil(cores / GATEWAY_UTILISATION));
  const streams = Math.max(1, Math.ceil(input.rate / (m.copyRowsPerStream.value * STREAM_UTILISATION)));
  // Never below the gateway's default of 4: every facility has a flush of its own in flight, and
  // each batch pays a transaction and a ledger row besides its rows.
  const perGateway = Math.max(DEFAULT_WRITERS, Math.ceil(streams / processes));
  // Cold chunks are merged per day (STRATA_TIER_COLD_MERGE) before they are archived: one object a day, or a chunk when chunks are longer.
  const objectsPerYear = Math.ceil((86_400 / Math.max(seconds, 86_400)) * 365);
  return {
    input,
    rowsPerDay,
    series: input.facilities * input.seriesPerFacility,
    tiers,
    chunkInterval: { seconds, text, indexBytes: seconds * perSecond, limitBytes, fits: fitting.length > 0 },
    walBytesPerDay: rowsPerDay * (columnstore ? m.columnstoreWalBytesPerRow.value + m.columnstoreCompactionWalBytesPerRow.value : m.walBytesPerRow.value),
    gateway: { cores, processes },
    // Each gateway process also keeps two connections for the series catalog and its replayer; all
    // of them share PgBouncer's pool of the gateway's user and database.
    writers: { streams, perGateway, pgbouncerPoolSize: processes * (perGateway + 2) },
    archive: { objectsPerYear, objects: objectsPerYear * input.archiveYears },
    measured: m,
  };
}

export function formatSize(r: SizeReport): string {
  const n = (x: number) => Math.round(x).toLocaleString('en-US');
  const m = r.measured;
  const plural = (k: number, one: string, many: string) => `${k} ${k === 1 ? one : many}`;
  // What one gateway process (one core) takes at the planned utilisation.
  const perProcess = (1e6 / m.gatewayCpuUsPerRow.value) * GATEWAY_UTILISATION;
  const lines = [
    `Region sizing for ${n(r.input.rate)} metrics/s from ${r.input.facilities} facilities (${n(r.series)} series), database memory ${bytes(r.input.memoryBytes)}`,
    '',
    `rows per day:          ${n(r.rowsPerDay)}`,
    ...r.tiers.map((t) => `${`${t.name}:`.padEnd(23)}${bytes(t.bytes).padStart(10)}  (${n(t.days)} days; ${t.note})`),
    `chunk interval:        ${r.chunkInterval.text}  (indexes of one chunk ${bytes(r.chunkInterval.indexBytes)} ≤ 25% of memory, ${bytes(r.chunkInterval.limitBytes)})`,
    ...(r.chunkInterval.fits ? [] : ['  WARNING: even 1-minute chunks exceed 25% of memory at this rate; add memory or split the region']),
    `WAL per day:           ${bytes(r.walBytesPerDay)}`,
    `gateway:               ${r.gateway.cores.toFixed(2)} cores of CPU → ${plural(r.gateway.processes, 'gateway process', 'gateway processes')} on ${plural(r.gateway.processes, 'core', 'cores')} (one process per core, ≤ ${GATEWAY_UTILISATION * 100}% busy: ≈${n(perProcess)} metrics/s each): strata serve --processes ${r.gateway.processes}${r.gateway.processes > 1 ? ' on one host, or spread over hosts' : ''}`,
    `COPY writers:          ${r.writers.streams} streams → STRATA_WRITERS=${r.writers.perGateway} per gateway process; PgBouncer default_pool_size ≥ ${r.writers.pgbouncerPoolSize} (${plural(r.gateway.processes, 'process', 'processes')} × (${r.writers.perGateway} writers + 2))`,
    `archive objects:       ${n(r.archive.objectsPerYear)} per year, ${n(r.archive.objects)} kept over ${r.input.archiveYears} years (one per archived chunk, a day once cold chunks are merged; ~40 KB Glacier overhead each)`,
    '',
    'figures used:',
    `  bytes per row on disk  ${m.bytesPerRow.value}  (${m.bytesPerRow.source})`,
    `  index bytes per row    ${m.indexBytesPerRow.value}  (${m.indexBytesPerRow.source})`,
    `  compression ratio      ${m.compressionRatio.value}:1  (${m.compressionRatio.source})`,
    `  cold compression ratio ${m.coldCompressionRatio.value}:1  (${m.coldCompressionRatio.source})`,
    `  archive bytes per row  ${m.archiveBytesPerRow.value}  (${m.archiveBytesPerRow.source})`,
    ...(r.input.ingestMode === 'columnstore'
      ? [
          `  hot bytes per row      ${m.columnstoreCompactedBytesPerRow.value} compacted, ${m.columnstoreBytesPerRow.value} as written  (${m.columnstoreCompactedBytesPerRow.source}; ${m.columnstoreBytesPerRow.source})`,
          `  WAL bytes per row      ${m.columnstoreWalBytesPerRow.value} written compressed + ${m.columnstoreCompactionWalBytesPerRow.value} compaction  (${m.columnstoreWalBytesPerRow.source}; ${m.columnstoreCompactionWalBytesPerRow.source})`,
        ]
      : [`  WAL bytes per row      ${m.walBytesPerRow.value}  (${m.walBytesPerRow.source})`]),
    `  gateway CPU µs/metric  ${m.gatewayCpuUsPerRow.value}  (${m.gatewayCpuUsPerRow.source})`,
    `  rows/s per COPY stream ${n(m.copyRowsPerStream.value)}  (${m.copyRowsPerStream.source})`,
  ];
  return lines.join('\n');
}
