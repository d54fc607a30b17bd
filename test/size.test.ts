// `strata size`: the arithmetic of a region's needs, where its figures come from, and the command.
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { main } from '../src/cli.ts';
import { shippedFigures } from '../src/sizing/command.ts';
import { measuredFigures } from '../src/sizing/measured.ts';
import { size, type Measured } from '../src/sizing/size.ts';
import { parseBytes } from '../src/units.ts';

const figures = (over: Partial<Record<keyof Measured, number>> = {}): Measured => {
  const v = { bytesPerRow: 50, indexBytesPerRow: 40, compressionRatio: 10, coldCompressionRatio: 10, archiveBytesPerRow: 5, walBytesPerRow: 100, columnstoreBytesPerRow: 20, columnstoreWalBytesPerRow: 40, columnstoreCompactedBytesPerRow: 5, columnstoreCompactionWalBytesPerRow: 7, gatewayCpuUsPerRow: 3, copyRowsPerStream: 300_000, ...over };
  return Object.fromEntries(Object.entries(v).map(([k, value]) => [k, { value, source: 'test' }])) as unknown as Measured;
};
const input = { rate: 500_000, facilities: 50, seriesPerFacility: 1_000, memoryBytes: 512 * 1024 ** 3, hotDays: 30, warmDays: 150, coldDays: 365, archiveYears: 7, ingestMode: 'rowstore' as const };

async function strata(args: string[]) {
  const out: string[] = [];
  const err: string[] = [];
  const code = await main(args, { out: (s) => out.push(s), err: (s) => err.push(s), env: {} });
  return { code, out: out.join('\n'), err: err.join('\n') };
}

describe('strata size', () => {
  it('computes rows, storage per tier, WAL, chunk interval, gateway processes and writers', () => {
    const r = size(input, figures({ coldCompressionRatio: 40, archiveBytesPerRow: 4 }));
    expect(r.rowsPerDay).toBe(43_200_000_000);
    // Warm at the compression ratio, cold at the cold one, the archive at its object bytes per row.
    expect(r.tiers.map((t) => t.bytes)).toEqual([43.2e9 * 30 * 50, (43.2e9 * 150 * 50) / 10, (43.2e9 * 365 * 50) / 40, 43.2e9 * 7 * 365 * 4]);
    expect(r.walBytesPerDay).toBe(43.2e9 * 100);
    // 25% of 512 GiB = 128 GiB; 2e7 index bytes/s → 1 hour is 72 GB, 2 hours would be 144 GB.
    expect(r.chunkInterval).toMatchObject({ seconds: 3_600, text: '1 hour', indexBytes: 7.2e10, fits: true });
    // 1.5 cores at ≤ 70% busy → 3 processes; 500k rows/s at half of 300k per stream → 4 streams.
    expect(r.gateway).toEqual({ cores: 1.5, processes: 3 });
    expect(r.writers).toEqual({ streams: 4, perGateway: 4, pgbouncerPoolSize: 18 });
    // Far more streams than the default per gateway: spread over the processes.
    expect(size({ ...input, rate: 5_000_000 }, figures({ gatewayCpuUsPerRow: 0.5 })).writers).toEqual({ streams: 34, perGateway: 9, pgbouncerPoolSize: 44 });
    // One object a day: cold chunks are merged per day before the archive takes them.
    expect(r.archive).toEqual({ objectsPerYear: 365, objects: 2_555 });
  });

  it('sizes the hot tier and the WAL from the columnstore figures when the gateways write compressed: compacted but for the newest chunk and two hours', () => {
    const r = size({ ...input, ingestMode: 'columnstore' }, figures());
    // 1-hour chunks: 3 hours of rows (500k/s) as written (20 bytes), the rest compacted (5 bytes).
    expect(r.tiers[0]).toMatchObject({ name: 'hot (compressed)', bytes: 43.2e9 * 30 * 5 + 500_000 * 3 * 3_600 * (20 - 5) });
    expect(r.tiers.slice(1).map((t) => t.bytes)).toEqual(size(input, figures()).tiers.slice(1).map((t) => t.bytes));
    // WAL: the write's and the compaction's.
    expect(r.walBytesPerDay).toBe(43.2e9 * (40 + 7));
  });

  it('warns when even one-minute chunks outgrow a quarter of memory', () => {
    const r = size({ ...input, memoryBytes: 1024 ** 3 }, figures());
    expect(r.chunkInterval).toMatchObject({ seconds: 60, fits: false });
  });

  it('labels every figure with its source: a results file when measured, an assumption otherwise', () => {
    const empty = measuredFigures(mkdtempSync(join(tmpdir(), 'strata-results-')));
    expect(Object.values(empty).every((f) => /^(as warm: |as the row store: |as written \(no compaction measured\): as the row store: )?assumed: /.test(f.source))).toBe(true);
    const dir = mkdtempSync(join(tmpdir(), 'strata-results-'));
    writeFileSync(join(dir, 'storage.json'), JSON.stringify({ date: '2026-11-21T10:00:00Z', results: { bytesPerRow: 61.5, indexBytesPerRow: 33, compressionRatio: 12.5, walBytesPerRow: 90 } }));
    writeFileSync(join(dir, 'ingest-gateway.json'), JSON.stringify({ results: [{ method: 'a', batchRows: 1000, batchAgeMs: 20, writers: 2, gatewayCpuUsPerRow: 3.6 }, { method: 'b', batchRows: 20000, batchAgeMs: 100, writers: 4, gatewayCpuUsPerRow: 3.2 }] }));
    writeFileSync(join(dir, 'copy-paths.json'), JSON.stringify({ results: [{ method: 'port COPY binary', rowsPerSecond: 320_000 }, { method: 'port COPY binary', rowsPerSecond: 342_000 }] }));
    writeFileSync(join(dir, 'compression.json'), JSON.stringify({ results: [{ variant: 1, ratio: 12.5 }, { variant: 10, ratio: 20 }, { variant: 12, ratio: 18.5 }] }));
    writeFileSync(join(dir, 'archive.json'), JSON.stringify({ results: { bytesPerRow: 4.1 } }));
    writeFileSync(join(dir, 'bench-10f-ns-columnstore.json'), JSON.stringify({ date: '2026-12-02T19:00:00Z', results: { bytesPerRow: 21.5, walBytesPerRow: 44, compacted: { bytesPerRow: 6.2, walBytesPerRow: 7 } } }));
    const m = measuredFigures(dir);
    expect(Object.fromEntries(Object.entries(m).map(([k, f]) => [k, f.value]))).toEqual({
      bytesPerRow: 61.5,
      indexBytesPerRow: 33,
      compressionRatio: 12.5,
      coldCompressionRatio: 18.5,
      archiveBytesPerRow: 4.1,
      walBytesPerRow: 90,
      columnstoreBytesPerRow: 21.5,
      columnstoreWalBytesPerRow: 44,
      columnstoreCompactedBytesPerRow: 6.2,
      columnstoreCompactionWalBytesPerRow: 7,
      gatewayCpuUsPerRow: 3.2,
      copyRowsPerStream: 342_000,
    });
    expect(m.bytesPerRow.source).toBe(`measured: ${join(dir, 'storage.json')}, 2026-11-21`);
    // The harness's end-to-end run of the design workload, once there is one, wins over the older sweep.
    writeFileSync(join(dir, 'bench-10f-ns.json'), JSON.stringify({ date: '2026-12-02T05:00:00Z', results: { gateway: { cpuUsPerRow: 0.9 } } }));
    expect(measuredFigures(dir).gatewayCpuUsPerRow).toEqual({ value: 0.9, source: `measured: ${join(dir, 'bench-10f-ns.json')}, 2026-12-02` });
  });

  it('ships the figures bench/results gives (refresh with npx tsx bench/size-figures.ts) and uses them from any directory', async () => {
    const shipped = shippedFigures();
    // Run from the checkout's root (as vitest is): the sources read "bench/results/…".
    expect(shipped).toEqual(measuredFigures('bench/results'));
    expect(Object.values(shipped).filter((f) => f.source.startsWith('measured: ')).length).toBeGreaterThanOrEqual(10);
    const cwd = process.cwd();
    process.chdir(mkdtempSync(join(tmpdir(), 'strata-elsewhere-')));
    try {
      const r = await strata(['size', '--rate', '500000', '--facilities', '50', '--memory', '512GiB', '--json']);
      expect(JSON.parse(r.out).measured).toEqual(shipped);
    } finally {
      process.chdir(cwd);
    }
  });

  it('reads sizes with units', () => {
    expect(parseBytes('512GiB')).toBe(512 * 1024 ** 3);
    expect(parseBytes('64 GB')).toBe(64e9);
    expect(parseBytes('1.5TiB')).toBe(1.5 * 1024 ** 4);
    expect(parseBytes('lots')).toBeNull();
  });

  it('prints the report, or JSON, and names a missing or bad option', async () => {
    const text = await strata(['size', '--rate', '500000', '--facilities', '50', '--memory', '512GiB', '--results', mkdtempSync(join(tmpdir(), 'x-'))]);
    expect(text.code).toBe(0);
    expect(text.out).toContain('rows per day:          43,200,000,000');
    expect(text.out).toContain('chunk interval:        1 hour');
    const json = await strata(['size', '--rate', '1000', '--facilities', '1', '--memory', '8GiB', '--json']);
    expect(JSON.parse(json.out).rowsPerDay).toBe(86_400_000);
    expect(await strata(['size', '--rate', '1000', '--facilities', '1'])).toMatchObject({ code: 64, err: "strata: strata size: --memory is required (the database server's RAM, e.g. 512GiB)" });
    expect(await strata(['size', '--rate', 'fast', '--facilities', '1', '--memory', '8GiB'])).toMatchObject({ code: 64, err: 'strata: strata size: --rate "fast" must be a whole number of at least 1' });
    expect(await strata(['size', '--rate', '10', '--facilities', '1', '--memory', '8GiB', '--ingest-mode', 'columns'])).toMatchObject({ code: 64, err: 'strata: strata size: --ingest-mode "columns" must be rowstore or columnstore (STRATA_INGEST_MODE)' });
    expect(await strata(['size', '--rate', '10', '--facilities', '1', '--memory', 'big'])).toMatchObject({ code: 64, err: 'strata: strata size: --memory "big" is not a size such as 512GiB, 64GB or 1TiB' });
  });
});
