// End-to-end ingest: HTTP line protocol in → rows committed in TimescaleDB, through the gateway
// (`strata serve`, a child process) and PgBouncer in transaction pooling, for a sweep of batch
// rows / batch age / writer connections. Beside it in the same run, on the same rows: psql \copy
// (the single-stream limit) and the port's binary COPY sent directly (no HTTP, no PgBouncer).
// Committed rows are counted in the database; the gateway's CPU and peak RSS come from /proc.
//
//   npx tsx bench/ingest-gateway.ts --url postgres://postgres@127.0.0.1:5432/postgres [--rows 1000000]
//       [--facilities 10] [--clients 20] [--sweep 1000:20:2,5000:50:4,...] [--gzip true] [--node-args "--cpu-prof"]
//
// The URL is a superuser connection (trust or password) to a TimescaleDB server; a scratch database is
// created and dropped. PgBouncer (/usr/sbin/pgbouncer) is started on a free port in front of it.
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs, promisify } from 'node:util';
import { gzipSync } from 'node:zlib';
import { migrate } from '../src/db/migrate.ts';
import { METRICS_COPY_BINARY, encodeBinary } from '../src/ingest/copy-encode.ts';
import { currentRows } from './support/baselines.ts';
import { startBouncer } from './support/bouncer.ts';
import { benchFacilities } from './support/facilities.ts';
import { startGatewayProcess } from './support/gateway-process.ts';
import { writeResults, type GatewayRun } from './support/report.ts';
import { scratchDatabase } from './support/scratch.ts';

const { values } = parseArgs({
  options: {
    url: { type: 'string' },
    rows: { type: 'string', default: '1000000' },
    facilities: { type: 'string', default: '10' },
    clients: { type: 'string', default: '20' },
    'rows-per-request': { type: 'string', default: '1000' },
    sweep: { type: 'string', default: '1000:20:2,5000:20:2,5000:100:4,20000:100:4,5000:100:8' },
    gzip: { type: 'string', default: 'true' },
    out: { type: 'string', default: 'bench/results' },
    'node-args': { type: 'string', default: '' }, // e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof" to profile the gateway
  },
});
if (!values.url) {
  console.error('usage: npx tsx bench/ingest-gateway.ts --url <superuser URL of a TimescaleDB server> [--rows N] [--sweep rows:ageMs:writers,...]');
  process.exit(64);
}
const total = Number(values.rows);
const F = Number(values.facilities);
const clients = Number(values.clients);
const perRequest = Number(values['rows-per-request']);
const FIELDS = 5;
const gzip = values.gzip !== 'false';
const sweep = values.sweep.split(',').map((s) => {
  const [rows, age, writers] = s.split(':').map(Number);
  return { batchRows: rows!, batchAgeMs: age!, writers: writers! };
});

const scratch = await scratchDatabase(values.url, 'strata_gwbench');
const db = scratch.db;
const work = mkdtempSync(join(tmpdir(), 'strata-gwbench-'));
const bouncer = await startBouncer(new URL(values.url), work);
const runs: GatewayRun[] = [];

/** Requests per facility: `perRequest` rows each (lines of FIELDS fields), unique times per series. */
function makeBodies(round: number): { facility: number; body: Buffer }[] {
  const out: { facility: number; body: Buffer }[] = [];
  const requests = Math.ceil(total / perRequest);
  const linesPer = perRequest / FIELDS;
  const base = Date.UTC(2026, 10, 21, 10) + round * 86_400_000;
  for (let r = 0; r < requests; r++) {
    const facility = r % F;
    const tick = Math.floor(r / F);
    const lines: string[] = [];
    for (let l = 0; l < linesPer; l++) {
      const fields = Array.from({ length: FIELDS }, (_, k) => `f${k}=${(20 + Math.sin(tick + l + k)).toFixed(4)}`).join(',');
      lines.push(`machine,line=l${l % 10},unit=u${l} ${fields} ${(base + tick * 1000) * 1e6}`);
    }
    const text = lines.join('\n') + '\n';
    out.push({ facility, body: gzip ? gzipSync(text) : Buffer.from(text) });
  }
  return out;
}

async function count(): Promise<number> {
  return (await db.query<{ n: number }>('SELECT count(*)::int AS n FROM strata.metrics')).rows[0]!.n;
}

async function gatewayRun(cfg: (typeof sweep)[number], round: number, tokens: string[]): Promise<GatewayRun> {
  const gw = await startGatewayProcess(
    {
      STRATA_DATABASE_URL: bouncer.url(scratch.name),
      STRATA_REGION: 'bench',
      STRATA_SPOOL_DIR: join(work, `spool-${round}`),
      STRATA_BATCH_ROWS: String(cfg.batchRows),
      STRATA_BATCH_AGE_MS: String(cfg.batchAgeMs),
      STRATA_WRITERS: String(cfg.writers),
      STRATA_WRITE_TIMEOUT_MS: '10000',
    },
    values['node-args'].split(' ').filter(Boolean),
  );
  const base = gw.url;
  const bodies = makeBodies(round);
  const send = async (b: { facility: number; body: Buffer }) => {
    const t0 = performance.now();
    const res = await fetch(`${base}/api/v2/write?precision=ns`, {
      method: 'POST',
      body: b.body as BodyInit,
      headers: { Authorization: `Token ${tokens[b.facility]}`, ...(gzip ? { 'Content-Encoding': 'gzip' } : {}) },
    });
    await res.arrayBuffer();
    if (res.status !== 204) throw new Error(`gateway answered ${res.status}`);
    return performance.now() - t0;
  };
  // Warm-up: one request per facility creates its series (not timed).
  const warm = bodies.splice(0, F);
  await Promise.all(warm.map(send));
  const before = await count();
  const cpu0 = gw.stat().cpuSeconds;
  const latencies: number[] = [];
  const t0 = performance.now();
  let next = 0;
  await Promise.all(
    Array.from({ length: clients }, async () => {
      while (next < bodies.length) latencies.push(await send(bodies[next++]!));
    }),
  );
  const seconds = (performance.now() - t0) / 1000;
  const committed = (await count()) - before;
  const stat = gw.stat();
  const spooled = await gw.counter('strata_ingest_rows_spooled_total');
  await gw.stop();
  const sent = bodies.length * perRequest;
  if (committed !== sent) throw new Error(`${committed} rows committed, ${sent} sent`);
  latencies.sort((a, b) => a - b);
  const q = (p: number) => +latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))]!.toFixed(1);
  return {
    method: `gateway ${cfg.batchRows} rows / ${cfg.batchAgeMs} ms / ${cfg.writers} writers`,
    ...cfg,
    rows: committed,
    rowsPerSecond: Math.round(committed / seconds),
    gatewayCpuUsPerRow: +(((stat.cpuSeconds - cpu0) * 1e6) / committed).toFixed(2),
    peakRssMiB: stat.peakRssMiB,
    ackP50Ms: q(0.5),
    ackP99Ms: q(0.99),
    spooledRows: spooled,
  };
}

try {
  await migrate(db, { chunkInterval: '1 hour' });
  const versions = await scratch.versions();
  const tokens = await benchFacilities(db, F, 'bench');
  for (const [round, cfg] of sweep.entries()) {
    await db.exec('TRUNCATE strata.metrics');
    await db.exec('CHECKPOINT');
    const r = await gatewayRun(cfg, round, tokens);
    runs.push(r);
    console.error(`${r.method}: ${r.rowsPerSecond.toLocaleString()} rows/s, ${r.gatewayCpuUsPerRow} µs/row, ack p50 ${r.ackP50Ms} ms p99 ${r.ackP99Ms} ms, RSS ${r.peakRssMiB} MiB`);
  }
  // Baselines on the rows the last run committed: psql \copy (text) and the port's binary COPY.
  const rows = await currentRows(db);
  const file = join(work, 'rows.tsv');
  await promisify(execFile)('psql', [scratch.url, '-c', `\\copy (SELECT * FROM strata.metrics) TO '${file}'`]);
  const baselines: Record<string, () => Promise<void>> = {
    'psql \\copy (text file)': async () => void (await promisify(execFile)('psql', [scratch.url, '-v', 'ON_ERROR_STOP=1', '-c', `\\copy strata.metrics FROM '${file}'`])),
    'port binary COPY, direct, 5000-row batches': async () => {
      for (let i = 0; i < rows.length; i += 5_000) await db.copyIn(METRICS_COPY_BINARY, [encodeBinary(rows.slice(i, i + 5_000))]);
    },
  };
  for (const [method, run] of Object.entries(baselines)) {
    await db.exec('TRUNCATE strata.metrics');
    await db.exec('CHECKPOINT');
    const t0 = performance.now();
    await run();
    const seconds = (performance.now() - t0) / 1000;
    const n = await count();
    if (n !== rows.length) throw new Error(`${method}: ${n} of ${rows.length} rows`);
    runs.push({ method, rows: n, rowsPerSecond: Math.round(n / seconds) });
    console.error(`${method}: ${Math.round(n / seconds).toLocaleString()} rows/s`);
  }
  const server = new URL(values.url);
  const command = `npx tsx bench/ingest-gateway.ts --url postgres://${server.username}@${server.host}/… --rows ${total} --facilities ${F} --clients ${clients} --sweep ${values.sweep} --gzip ${gzip}`;
  console.log(writeResults(values.out, 'ingest-gateway', command, versions, { rows: total, facilities: F, clients, rowsPerRequest: perRequest, fieldsPerLine: FIELDS, gzip }, runs));
} finally {
  await bouncer.stop();
  await scratch.drop();
  rmSync(work, { recursive: true, force: true });
}
