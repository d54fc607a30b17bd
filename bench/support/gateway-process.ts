// A `strata serve` child process for benchmarks, with its CPU time and peak RSS read from /proc.
import { randomBytes } from 'node:crypto';
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';

export interface GatewayProcess {
  url: string;
  child: ChildProcess;
  /** User + system CPU seconds so far, and peak RSS (MiB). */
  stat(): { cpuSeconds: number; peakRssMiB: number };
  /** The gateway's own Prometheus counter (sum over labels). */
  counter(name: string): Promise<number>;
  stop(): Promise<number | null>;
}

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

export async function startGatewayProcess(env: Record<string, string>, nodeArgs: string[] = []): Promise<GatewayProcess> {
  const port = await freePort();
  // The harness reads the gateway's counters from /metrics, which wants a token.
  const metricsToken = `bench-${randomBytes(12).toString('hex')}`;
  const child = spawn(process.execPath, [...nodeArgs, join(import.meta.dirname, '../../bin/strata.js'), 'serve'], {
    env: { ...process.env, STRATA_LISTEN: `127.0.0.1:${port}`, STRATA_LOG_LEVEL: 'warn', STRATA_GATEWAY_PROCESSES: '1', STRATA_METRICS_TOKEN: metricsToken, ...env },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  const url = `http://127.0.0.1:${port}`;
  for (let i = 0; ; i++) {
    if (await fetch(`${url}/ready`).then((r) => r.ok, () => false)) break;
    if (child.exitCode !== null || i > 600) throw new Error('the gateway did not become ready');
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    url,
    child,
    stat() {
      const fields = readFileSync(`/proc/${child.pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
      const hwm = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'))?.[1];
      return { cpuSeconds: (Number(fields[11]) + Number(fields[12])) / 100, peakRssMiB: Math.round(Number(hwm) / 1024) };
    },
    async counter(name) {
      const text = await (await fetch(`${url}/metrics`, { headers: { Authorization: `Bearer ${metricsToken}` } })).text();
      return [...text.matchAll(new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, 'gm'))].reduce((n, m) => n + Number(m[1]), 0);
    },
    stop() {
      child.kill('SIGTERM');
      return new Promise((r) => child.once('exit', (code) => r(code)));
    },
  };
}
