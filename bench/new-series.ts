// One request that creates N new series (default 200,000), through `strata serve` in its own process →
// PgBouncer → TimescaleDB: the gateway's peak RSS and the request's time, then a request of the same
// lines again (every series cached: the fast path), and the rows checked in the database.
//
//   npx tsx bench/new-series.ts --url postgres://postgres@127.0.0.1:5432/postgres [--series 200000] [--out bench/results]
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { migrate } from '../src/db/migrate.ts';
import { startBouncer } from './support/bouncer.ts';
import { benchFacilities } from './support/facilities.ts';
import { startGatewayProcess } from './support/gateway-process.ts';
import { scratchDatabase } from './support/scratch.ts';
import { writeTable } from './support/table.ts';

const { values } = parseArgs({ options: { url: { type: 'string' }, series: { type: 'string', default: '200000' }, out: { type: 'string', default: 'bench/results' } } });
if (!values.url) {
  console.error('usage: npx tsx bench/new-series.ts --url <superuser URL of a TimescaleDB server> [--series 200000] [--out bench/results]');
  process.exit(64);
}
const N = Number(values.series);
const say = (line: string) => process.stderr.write(line + '\n');
const work = mkdtempSync(join(tmpdir(), 'strata-new-series-'));
const scratch = await scratchDatabase(values.url, 'strata_new_series');
const bouncer = await startBouncer(new URL(values.url), work);
try {
  await migrate(scratch.db, { chunkInterval: '1 day' });
  const [token] = await benchFacilities(scratch.db, 1, 'newseries');
  const gw = await startGatewayProcess({ STRATA_DATABASE_URL: bouncer.url(scratch.name), STRATA_REGION: 'bench', STRATA_SPOOL_DIR: join(work, 'spool'), STRATA_SERIES_LIMIT: String(N + 1) });
  // Every line a series of its own: three tags, sensor-like names, one float field.
  const t0 = Date.UTC(2026, 10, 21) * 1e6;
  const body = (round: number) =>
    Buffer.from(Array.from({ length: N }, (_, i) => `vibration,site=s${i % 50},machine=m${Math.floor(i / 50) % 400},sensor=x${i} rms=${(i % 997) / 10} ${t0 + round * 1e9}`).join('\n') + '\n');
  const send = async (b: Buffer) => {
    const started = performance.now();
    const res = await fetch(`${gw.url}/api/v2/write?precision=ns`, { method: 'POST', body: b as BodyInit, headers: { Authorization: `Token ${token}` } });
    const text = await res.text();
    return { status: res.status, seconds: +((performance.now() - started) / 1000).toFixed(2), text: text.slice(0, 200) };
  };
  const before = gw.stat();
  const first = await send(body(0));
  const afterFirst = gw.stat();
  say(`first request: ${first.status} in ${first.seconds} s, peak RSS ${afterFirst.peakRssMiB} MiB`);
  const second = await send(body(1));
  const afterSecond = gw.stat();
  say(`second request: ${second.status} in ${second.seconds} s`);
  await gw.stop();
  const counts = (await scratch.db.query<{ series: number; rows: number }>('SELECT (SELECT count(*)::int FROM strata.series) AS series, (SELECT count(*)::int FROM strata.metrics) AS rows')).rows[0]!;
  const table = [
    `One facility, one request of ${N.toLocaleString()} lines, each a new series (\`vibration,site=…,machine=…,sensor=… rms=…\`), then the same series again; \`strata serve\` in its own process.`,
    '',
    `Gateway peak RSS before the first request (started, facilities loaded): ${before.peakRssMiB} MiB.`,
    '',
    '| request | status | seconds | gateway CPU s | gateway peak RSS MiB |',
    '| --- | ---: | ---: | ---: | ---: |',
    `| ${N.toLocaleString()} new series | ${first.status} | ${first.seconds} | ${(afterFirst.cpuSeconds - before.cpuSeconds).toFixed(2)} | ${afterFirst.peakRssMiB} |`,
    `| the same ${N.toLocaleString()} series, cached | ${second.status} | ${second.seconds} | ${(afterSecond.cpuSeconds - afterFirst.cpuSeconds).toFixed(2)} | ${afterSecond.peakRssMiB} |`,
    '',
    `In the database afterwards: ${counts.series.toLocaleString()} series, ${counts.rows.toLocaleString()} rows (expected ${N.toLocaleString()} and ${(2 * N).toLocaleString()}).`,
  ];
  const command = `npx tsx bench/new-series.ts --url <url> --series ${N}`;
  console.log(writeTable(values.out!, 'new-series', command, await scratch.versions(), { series: N }, table, { first, second, startRssMiB: before.peakRssMiB, peakRssMiB: afterSecond.peakRssMiB, counts }));
  if (first.status !== 204 || second.status !== 204 || counts.series !== N || counts.rows !== 2 * N) process.exitCode = 1;
} finally {
  await bouncer.stop();
  await scratch.drop();
  rmSync(work, { recursive: true, force: true });
}
