// The benchmark harness as an engineer runs it: `strata bench` end to end on the embedded target (the
// default shape, the 1-field sensor shape with ms timestamps on one facility, and gateway-only mode),
// and a clear refusal when a target or an option cannot be used here.
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { makeBatch } from '../bench/support/workload.ts';
import { loadConfig } from '../src/config.ts';

const bin = join(import.meta.dirname, '../bin/strata.js');
const dockerEngine = Boolean(process.env.DOCKER_HOST) || existsSync('/var/run/docker.sock');
interface ResultFile {
  configuration: Record<string, unknown>;
  results: {
    load: { counted: string; committedRows: number; ackedRows: number; lostRows: number; rowsPerSecond: number; ack: { p99: number } };
    baselines: unknown[];
    gateway: { cpuUsPerRow: number | null; peakRssMiB: number | null; where: string };
    bytesPerRow: number | null;
  };
}
const result = (dir: string, name: string) => JSON.parse(readFileSync(join(dir, `${name}.json`), 'utf8')) as ResultFile;
const run = (args: string[]) =>
  promisify(execFile)(process.execPath, [bin, 'bench', ...args], { maxBuffer: 16 << 20 }).then(
    (r) => ({ code: 0, stdout: r.stdout, stderr: r.stderr }),
    (e: { code: number; stdout: string; stderr: string }) => ({ code: e.code, stdout: e.stdout, stderr: e.stderr }),
  );

describe('strata bench', () => {
  it('drives the gateway on the embedded target and reports committed rows, latency and no lost rows', async () => {
    const out = mkdtempSync(join(tmpdir(), 'strata-bench-'));
    const r = await run(['--embedded', '--rows', '20000', '--facilities', '2', '--series', '100', '--batch-lines', '500', '--interval', '1', '--out', out]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/\[\d+ s\] sent [\d,]+ rows, acked [\d,]+, committed [\d,]+/); // progress while it runs
    const { results, configuration } = result(out, 'bench-10f-ns');
    expect(results.load.lostRows).toBe(0);
    expect(results.load.committedRows).toBe(results.load.ackedRows);
    expect(results.load.committedRows).toBeGreaterThanOrEqual(20_000);
    expect(results.load.ack.p99).toBeGreaterThan(0);
    expect(configuration).toMatchObject({ fields: 10, precision: 'ns', clients: 8, gatewayOnly: false });
    expect(readFileSync(join(out, 'bench-10f-ns.md'), 'utf8')).toContain('| gateway end to end (HTTP → committed) | 10 | ns |');
  }, 120_000);

  it('sends the 1-field sensor shape with ms timestamps, and N fields otherwise', () => {
    const w = { facilities: 1, seriesPerFacility: 100, linesPerBatch: 3, gzip: false };
    const start = Date.UTC(2026, 10, 21);
    const one = makeBatch({ ...w, fields: 1, precision: 'ms' }, 0, 24, start);
    expect(one.rows).toBe(3);
    expect(one.body.toString().split('\n')[1]).toMatch(/^sensor,line=L3,cell=C7 value=\d+\.\d{3} 1795219200000$/);
    const three = makeBatch({ ...w, fields: 3, precision: 'ns' }, 0, 0, start);
    expect(three.rows).toBe(9);
    expect(three.body.toString().split('\n')[0]).toMatch(/^machine,line=l0,unit=u0 f0=\d+\.\d\d,f1=\d+i,f2=(true|false) 1795219200000000000$/);
  });

  it('runs one facility with 1-field lines and ms timestamps, named by its shape', async () => {
    const out = mkdtempSync(join(tmpdir(), 'strata-bench-'));
    const r = await run(['--embedded', '--rows', '20000', '--facilities', '1', '--series', '200', '--batch-lines', '500', '--fields', '1', '--timestamps', 'ms', '--interval', '1', '--out', out]);
    expect(r.code, r.stderr).toBe(0);
    const { results, configuration } = result(out, 'bench-1f-ms');
    expect(configuration).toMatchObject({ facilities: 1, fields: 1, precision: 'ms', clients: 8 });
    expect(results.load.lostRows).toBe(0);
    expect(results.load.committedRows).toBe(results.load.ackedRows);
    expect(results.load.committedRows).toBeGreaterThanOrEqual(20_000);
    const md = readFileSync(join(out, 'bench-1f-ms.md'), 'utf8');
    expect(md).toContain('| gateway end to end (HTTP → committed) | 1 | ms |');
    expect(md).toMatch(/1 facility × 200 series \(200 tag sets × 1 field per line/);
    expect(existsSync(join(out, 'bench-10f-ns.json'))).toBe(false);
  }, 120_000);

  it('--gateway-only: a strata serve process that discards rows (STRATA_BENCH_DISCARD); acknowledged rows, CPU and RSS reported', async () => {
    const out = mkdtempSync(join(tmpdir(), 'strata-bench-'));
    const r = await run(['--embedded', '--gateway-only', '--rows', '20000', '--facilities', '2', '--series', '100', '--batch-lines', '500', '--interval', '1', '--out', out]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/\[\d+ s\] sent [\d,]+ rows, acked [\d,]+ \([\d,]+ rows\/s acknowledged; rows discarded\)/);
    expect(r.stderr).toContain('DISCARDED'); // the gateway process says so itself
    const { results, configuration } = result(out, 'bench-10f-ns-gateway-only');
    expect(configuration).toMatchObject({ gatewayOnly: true, fields: 10, precision: 'ns' });
    expect(results.load.counted).toBe('acknowledged');
    expect(results.load.ackedRows).toBeGreaterThanOrEqual(20_000);
    expect(results.load.committedRows).toBe(0);
    expect(results.load.rowsPerSecond).toBeGreaterThan(0);
    expect(results.baselines).toEqual([]);
    expect(results.bytesPerRow).toBeNull();
    expect(results.gateway.where).toMatch(/its own process/);
    expect(results.gateway.cpuUsPerRow).toBeGreaterThan(0);
    expect(results.gateway.peakRssMiB).toBeGreaterThan(0);
    const md = readFileSync(join(out, 'bench-10f-ns-gateway-only.md'), 'utf8');
    expect(md).toContain('Gateway only: parse + encode, rows discarded');
    expect(md).toContain('| gateway only: parse + encode, rows discarded (HTTP → acknowledged) | 10 | ns |');
    expect(md).not.toContain('gateway end to end');
  }, 120_000);

  it('refuses bad --fields and --timestamps; STRATA_BENCH_DISCARD is a boolean setting, unset by default', async () => {
    expect((await run(['--embedded', '--fields', '0'])).code).toBe(64);
    const us = await run(['--embedded', '--timestamps', 'us']);
    expect(us.code).toBe(64);
    expect(us.stderr).toMatch(/--timestamps must be ns or ms/);
    expect(loadConfig({ env: {} }).benchDiscard).toBeUndefined();
    expect(loadConfig({ env: { STRATA_BENCH_DISCARD: '1' } }).benchDiscard).toBe(true);
    expect(loadConfig({ env: { STRATA_BENCH_DISCARD: '0' } }).benchDiscard).toBe(false);
    expect(() => loadConfig({ env: { STRATA_BENCH_DISCARD: 'maybe' } })).toThrow(/STRATA_BENCH_DISCARD="maybe": must be 1 or 0/);
  }, 60_000);

  it.skipIf(dockerEngine)('says what it needs when no target, or no Docker engine for --testcontainers (skipped where an engine runs)', async () => {
    expect((await run([])).code).toBe(64);
    const docker = await run(['--testcontainers']);
    expect(docker.code).toBe(69);
    expect(docker.stderr).toMatch(/--testcontainers needs a Docker engine, and none is reachable/);
  }, 60_000);
});
