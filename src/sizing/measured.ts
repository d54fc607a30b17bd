// The figures `strata size` uses, read from the benchmark results in bench/results/ (each labelled
// with the file and command that produced it), or DESIGN §1's assumptions where none was measured.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Figure, Measured } from './size.ts';

interface ResultFile {
  date?: string;
  command?: string;
  results?: unknown;
  runs?: unknown;
}

function read(dir: string, name: string): ResultFile | null {
  const path = join(dir, `${name}.json`);
  if (!existsSync(path)) return null;
  try {
    return JSON.parse(readFileSync(path, 'utf8')) as ResultFile;
  } catch {
    return null;
  }
}

const label = (dir: string, name: string, f: ResultFile) => `measured: ${join(dir, `${name}.json`)}${f.date ? `, ${f.date.slice(0, 10)}` : ''}`;
const assumed = (value: number, why: string): Figure => ({ value, source: `assumed: ${why}` });
const positive = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v) && v > 0;

export function measuredFigures(dir: string): Measured {
  const storage = read(dir, 'storage');
  const s = (storage?.results ?? {}) as Record<string, unknown>;
  const fromStorage = (key: string, fallback: Figure): Figure => (storage && positive(s[key]) ? { value: s[key], source: label(dir, 'storage', storage) } : fallback);

  const gatewayFile = read(dir, 'ingest-gateway');
  const gatewayRuns = ((gatewayFile?.results ?? gatewayFile?.runs ?? []) as { gatewayCpuUsPerRow?: unknown; batchRows?: unknown; batchAgeMs?: unknown; writers?: unknown }[]).filter((r) => positive(r.gatewayCpuUsPerRow));
  // The gateway's defaults (20,000 rows / 100 ms / 4 writers) when measured, else the cheapest run.
  const gatewayRun =
    gatewayRuns.find((r) => r.batchRows === 20_000 && r.batchAgeMs === 100 && r.writers === 4) ??
    [...gatewayRuns].sort((a, b) => (a.gatewayCpuUsPerRow as number) - (b.gatewayCpuUsPerRow as number))[0];

  // The harness's end-to-end run of the design workload (10 fields per line), when there is one.
  const harnessFile = read(dir, 'bench-10f-ns');
  const harnessCpu = ((harnessFile?.results ?? {}) as { gateway?: { cpuUsPerRow?: unknown } }).gateway?.cpuUsPerRow;

  const copyFile = read(dir, 'copy-paths');
  const binary = ((copyFile?.results ?? []) as { method?: string; rowsPerSecond?: unknown }[])
    .filter((r) => r.method === 'port COPY binary' && positive(r.rowsPerSecond))
    .sort((a, b) => (b.rowsPerSecond as number) - (a.rowsPerSecond as number))[0];

  const bytesPerRow = fromStorage('bytesPerRow', assumed(50, '~50 bytes per row uncompressed (DESIGN §1)'));
  const compressionRatio = fromStorage('compressionRatio', assumed(10, '~10:1 native compression (DESIGN §1)'));
  // The tiering job's own result on the compression benchmark (its variant 12).
  const compressionFile = read(dir, 'compression');
  const tierRun = ((compressionFile?.results ?? []) as { variant?: unknown; ratio?: unknown }[]).find((r) => r.variant === 12 && positive(r.ratio));
  const archiveFile = read(dir, 'archive');
  const archivePerRow = (archiveFile?.results as { bytesPerRow?: unknown } | undefined)?.bytesPerRow;

  // The harness's end-to-end run of the design workload with STRATA_INGEST_MODE=columnstore (npm run bench -- --ingest-mode columnstore).
  const colFile = read(dir, 'bench-10f-ns-columnstore');
  const col = (colFile?.results ?? {}) as { bytesPerRow?: unknown; walBytesPerRow?: unknown; compacted?: { bytesPerRow?: unknown; walBytesPerRow?: unknown } | null };
  const fromModes = (key: 'bytesPerRow' | 'walBytesPerRow', fallback: Figure): Figure => (colFile && positive(col[key]) ? { value: col[key], source: label(dir, 'bench-10f-ns-columnstore', colFile) } : fallback);
  const walBytesPerRow = fromStorage('walBytesPerRow', assumed(100, 'about twice the row size (heap and index records)'));

  /** After the hot compaction the harness runs on the same rows (bench/run.ts); without it, as written and no extra WAL. */
  const compactedFigures = () => {
    const written = fromModes('bytesPerRow', { ...bytesPerRow, source: `as the row store: ${bytesPerRow.source}` });
    const c = col.compacted;
    return colFile && c && positive(c.bytesPerRow) && typeof c.walBytesPerRow === 'number'
      ? { columnstoreCompactedBytesPerRow: { value: c.bytesPerRow, source: label(dir, 'bench-10f-ns-columnstore', colFile) + ' (compacted)' }, columnstoreCompactionWalBytesPerRow: { value: c.walBytesPerRow, source: label(dir, 'bench-10f-ns-columnstore', colFile) + ' (compaction)' } }
      : { columnstoreCompactedBytesPerRow: { ...written, source: `as written (no compaction measured): ${written.source}` }, columnstoreCompactionWalBytesPerRow: assumed(0, 'no compaction measured') };
  };

  return {
    bytesPerRow,
    indexBytesPerRow: fromStorage('indexBytesPerRow', assumed(40, 'two indexes of about 20 bytes per row each')),
    compressionRatio,
    coldCompressionRatio: compressionFile && tierRun ? { value: tierRun.ratio as number, source: label(dir, 'compression', compressionFile) } : { ...compressionRatio, source: `as warm: ${compressionRatio.source}` },
    archiveBytesPerRow:
      archiveFile && positive(archivePerRow)
        ? { value: archivePerRow, source: label(dir, 'archive', archiveFile) }
        : assumed(+(bytesPerRow.value / compressionRatio.value).toFixed(2), 'the compressed size (no archive benchmark found)'),
    walBytesPerRow,
    columnstoreBytesPerRow: fromModes('bytesPerRow', { ...bytesPerRow, source: `as the row store: ${bytesPerRow.source}` }),
    columnstoreWalBytesPerRow: fromModes('walBytesPerRow', { ...walBytesPerRow, source: `as the row store: ${walBytesPerRow.source}` }),
    ...compactedFigures(),
    gatewayCpuUsPerRow:
      harnessFile && positive(harnessCpu)
        ? { value: harnessCpu, source: label(dir, 'bench-10f-ns', harnessFile) }
        : gatewayFile && gatewayRun
          ? { value: gatewayRun.gatewayCpuUsPerRow as number, source: label(dir, 'ingest-gateway', gatewayFile) }
          : assumed(3, 'no gateway benchmark found'),
    copyRowsPerStream: copyFile && binary ? { value: binary.rowsPerSecond as number, source: label(dir, 'copy-paths', copyFile) } : assumed(300_000, 'no COPY benchmark found'),
  };
}
