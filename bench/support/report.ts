// The ingest benchmark's result table (ratios against psql \copy of the same run), written with writeTable.
import { writeTable } from './table.ts';

export interface GatewayRun {
  method: string;
  rows: number;
  rowsPerSecond: number;
  batchRows?: number;
  batchAgeMs?: number;
  writers?: number;
  gatewayCpuUsPerRow?: number;
  peakRssMiB?: number;
  ackP50Ms?: number;
  ackP99Ms?: number;
  spooledRows?: number;
}

export function writeResults(dir: string, name: string, command: string, versions: Record<string, string>, configuration: Record<string, unknown>, runs: GatewayRun[]): string {
  const baseline = runs.find((r) => r.method.startsWith('psql'))?.rowsPerSecond ?? NaN;
  const cell = (v: number | undefined) => (v === undefined ? '—' : v.toLocaleString());
  return writeTable(dir, name, command, versions, configuration, [
    'Committed rows counted in the database; every run is checked to have committed exactly the rows sent.',
    '',
    '| method | rows/s | × psql \\copy | gateway CPU µs/row | peak RSS MiB | ack p50 ms | ack p99 ms |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: |',
    ...runs.map((r) => `| ${r.method} | ${r.rowsPerSecond.toLocaleString()} | ${(r.rowsPerSecond / baseline).toFixed(2)} | ${cell(r.gatewayCpuUsPerRow)} | ${cell(r.peakRssMiB)} | ${cell(r.ackP50Ms)} | ${cell(r.ackP99Ms)} |`),
  ], runs);
}
