// Writes a benchmark's results as JSON and a Markdown table (ratios against psql \copy of the same run).
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { join } from 'node:path';

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
  const meta = {
    date: new Date().toISOString(),
    command,
    machine: { cpus: cpus().length, model: cpus()[0]?.model, memoryGiB: Math.round(totalmem() / 2 ** 30) },
    versions: { node: process.version, ...versions },
    configuration,
  };
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, `${name}.json`), JSON.stringify({ ...meta, runs }, null, 2) + '\n');
  const baseline = runs.find((r) => r.method.startsWith('psql'))?.rowsPerSecond ?? NaN;
  const cell = (v: number | undefined) => (v === undefined ? '—' : v.toLocaleString());
  const md = [
    `# ${name}`,
    '',
    `Command: \`${command}\`  `,
    `Date: ${meta.date}; ${meta.machine.cpus} × ${meta.machine.model}, ${meta.machine.memoryGiB} GiB; Node ${process.version}, ${Object.entries(versions).map(([k, v]) => `${k} ${v}`).join(', ')}  `,
    `Configuration: ${Object.entries(configuration).map(([k, v]) => `${k}=${String(v)}`).join(', ')}. Committed rows counted in the database; every run is checked to have committed exactly the rows sent.`,
    '',
    '| method | rows/s | × psql \\copy | gateway CPU µs/row | peak RSS MiB | ack p50 ms | ack p99 ms |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: |',
    ...runs.map((r) => `| ${r.method} | ${r.rowsPerSecond.toLocaleString()} | ${(r.rowsPerSecond / baseline).toFixed(2)} | ${cell(r.gatewayCpuUsPerRow)} | ${cell(r.peakRssMiB)} | ${cell(r.ackP50Ms)} | ${cell(r.ackP99Ms)} |`),
    '',
  ].join('\n');
  writeFileSync(join(dir, `${name}.md`), md);
  return md;
}
