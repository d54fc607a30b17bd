// The benchmark harness as an engineer runs it: `strata bench` end to end on the embedded target, and
// a clear refusal when a target cannot be used here.
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

const bin = join(import.meta.dirname, '../bin/strata.js');
const dockerEngine = Boolean(process.env.DOCKER_HOST) || existsSync('/var/run/docker.sock');
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
    const result = JSON.parse(readFileSync(join(out, 'bench.json'), 'utf8')) as { results: { load: { committedRows: number; ackedRows: number; lostRows: number; ack: { p99: number } } } };
    expect(result.results.load.lostRows).toBe(0);
    expect(result.results.load.committedRows).toBe(result.results.load.ackedRows);
    expect(result.results.load.committedRows).toBeGreaterThanOrEqual(20_000);
    expect(result.results.load.ack.p99).toBeGreaterThan(0);
    expect(readFileSync(join(out, 'bench.md'), 'utf8')).toContain('| gateway end to end (HTTP → committed) |');
  }, 120_000);

  it.skipIf(dockerEngine)('says what it needs when no target, or no Docker engine for --testcontainers (skipped where an engine runs)', async () => {
    expect((await run([])).code).toBe(64);
    const docker = await run(['--testcontainers']);
    expect(docker.code).toBe(69);
    expect(docker.stderr).toMatch(/--testcontainers needs a Docker engine, and none is reachable/);
  }, 60_000);
});
