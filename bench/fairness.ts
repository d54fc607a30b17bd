// Fairness between facilities and gateway processes: `strata serve` in a child process
// (support/gateway-process.ts) → PgBouncer in transaction pooling (support/bouncer.ts) → PostgreSQL.
//
//   npx tsx bench/fairness.ts <noisy | latency | processes | all> [options]
//
//   noisy      a quiet facility (1 collector, 200-line requests at --quiet-rate requests/s) alone, then
//              while a noisy facility saturates the gateway (--noisy-collectors 8 collectors sending
//              --noisy-lines 20000-line requests as fast as they are answered): the quiet facility's
//              ack p50/p99 alone and under load, p99(loaded) ÷ p99(alone), its non-204 answers, the
//              noisy facility's throughput and answers
//   latency    one facility, --collectors 8 collectors, --lines 5000-line requests: the maximum
//              (closed loop), then an open loop at --load 0.8 of it (ack p50/p99); then --facilities 50
//              facilities (one collector each) at the same offered rate
//   processes  gateway only (STRATA_BENCH_DISCARD=1, as bench/run.ts --gateway-only; prebuilt bodies)
//              with STRATA_GATEWAY_PROCESSES=1 and 2 (--compare 1,2), runs interleaved: rows/s and the
//              ratio, gateway and load-generator CPU; then, writing to the database, each count's
//              closed-loop maximum and an open loop at --overload 2 × it for --overload-seconds 20:
//              peak RSS of every gateway process (the children of a `strata serve` primary)
//   all        the three, one results page (bench/results/fairness.md); a single mode writes
//              fairness-<mode>.md
//
// Database: a private plain PostgreSQL 15 cluster under the temporary directory (no TimescaleDB:
// strata.metrics is a plain table, as the tests' plainSchema), or --url <superuser URL> of a server
// (a scratch database; migrated with TimescaleDB when the server has it, else the plain schema).
// Options: --runs 3 (headline figures are medians of the runs), --seconds 20 (each measured phase),
// --fields 10, --processes N (STRATA_GATEWAY_PROCESSES for noisy and latency; default the machine's
// cores, as strata serve), --quiet-lines 200, --quiet-rate 5 (0: closed loop), --noisy-collectors 8,
// --noisy-lines 20000, --noisy-retry-after honour|ignore, --collectors 8, --lines 5000,
// --facilities 50, --load 0.8, --compare 1,2, --prebuilt 100, --overload 2, --overload-seconds 20,
// --wait-idle <cores> (before each measured phase, wait up to 60 s until other processes on a shared
// machine use at most that many cores; 0: do not wait), --gzip true|false (request bodies),
// --out bench/results, --name <results file name>. Every phase reports the machine's busy CPU and
// the part of it other processes used. Exit 64 on bad arguments (with this usage).
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { migrate } from '../src/db/migrate.ts';
import { addFacility, readerRoleName } from '../src/facilities/registry.ts';
import { plainSchema } from '../test/support/gateway.ts';
import { startBouncer } from './support/bouncer.ts';
import { post, runStreams, type Stream, type StreamsRun } from './support/collectors.ts';
import { startGatewayProcess, type GatewayProcess } from './support/gateway-process.ts';
import { drive, type LoadResult } from './support/load.ts';
import { LOCAL_PG_SETTINGS, startLocalPostgres, type LocalPostgres } from './support/local-postgres.ts';
import { cpuMeter, watchTree, type ProcStat, type TreeWatch } from './support/proc-tree.ts';
import { scratchDatabase } from './support/scratch.ts';
import { writeTable } from './support/table.ts';
import { makeBatch, tagSets, type Workload } from './support/workload.ts';

const USAGE = `usage: npx tsx bench/fairness.ts <noisy | latency | processes | all> [--url <superuser URL>] [--runs 3] [--seconds 20]
    [--fields 10] [--processes N] [--quiet-lines 200] [--quiet-rate 5] [--noisy-collectors 8] [--noisy-lines 20000]
    [--noisy-retry-after honour|ignore] [--collectors 8] [--lines 5000] [--facilities 50] [--load 0.8]
    [--compare 1,2] [--prebuilt 100] [--overload 2] [--overload-seconds 20] [--wait-idle 0] [--gzip true] [--out bench/results] [--name fairness]
  Without --url: a private plain PostgreSQL 15 cluster (no TimescaleDB) under ${tmpdir()}; see the comment at the top of bench/fairness.ts.`;

function usage(problems: string[] = []): never {
  for (const p of problems) console.error(p);
  console.error(USAGE);
  process.exit(64);
}

const MODES = ['noisy', 'latency', 'processes', 'all'] as const;
type Mode = (typeof MODES)[number];
const options = {
  url: { type: 'string' },
  runs: { type: 'string', default: '3' },
  seconds: { type: 'string', default: '20' },
  fields: { type: 'string', default: '10' },
  processes: { type: 'string' },
  'quiet-lines': { type: 'string', default: '200' },
  'quiet-rate': { type: 'string', default: '5' },
  'noisy-collectors': { type: 'string', default: '8' },
  'noisy-lines': { type: 'string', default: '20000' },
  'noisy-retry-after': { type: 'string', default: 'honour' },
  collectors: { type: 'string', default: '8' },
  lines: { type: 'string', default: '5000' },
  facilities: { type: 'string', default: '50' },
  load: { type: 'string', default: '0.8' },
  compare: { type: 'string', default: '1,2' },
  prebuilt: { type: 'string', default: '100' },
  overload: { type: 'string', default: '2' },
  'overload-seconds': { type: 'string', default: '20' },
  'wait-idle': { type: 'string', default: '0' },
  gzip: { type: 'string', default: 'true' },
  out: { type: 'string', default: 'bench/results' },
  name: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const;
function parse() {
  try {
    return parseArgs({ options, allowPositionals: true });
  } catch (err) {
    usage([(err as Error).message]);
  }
}
const parsed = parse();
const v = parsed.values;
if (v.help || parsed.positionals.length !== 1 || !MODES.includes(parsed.positionals[0] as Mode)) {
  usage(v.help || parsed.positionals.length === 0 ? [] : [`the mode must be one of ${MODES.join(', ')} (got ${parsed.positionals.join(' ')})`]);
}
const mode = parsed.positionals[0] as Mode;
const whole = (name: string, min: number): number => {
  const n = Number(v[name as keyof typeof v]);
  if (!Number.isInteger(n) || n < min) problems.push(`--${name} must be a whole number of at least ${min} (got ${String(v[name as keyof typeof v])})`);
  return n;
};
const fraction = (name: string, min: number, max: number): number => {
  const n = Number(v[name as keyof typeof v]);
  if (!(n >= min && n <= max)) problems.push(`--${name} must be a number from ${min} to ${max} (got ${String(v[name as keyof typeof v])})`);
  return n;
};
const problems: string[] = [];
const runs = whole('runs', 1);
const seconds = whole('seconds', 1);
const fields = whole('fields', 1);
const quietLines = whole('quiet-lines', 1);
const quietRate = fraction('quiet-rate', 0, 10_000);
const noisyCollectors = whole('noisy-collectors', 1);
const noisyLines = whole('noisy-lines', 1);
const collectors = whole('collectors', 1);
const lines = whole('lines', 1);
const facilities = whole('facilities', 2);
const load = fraction('load', 0.01, 10);
const prebuilt = whole('prebuilt', 1);
const overload = fraction('overload', 0.01, 100);
const overloadSeconds = whole('overload-seconds', 1);
const waitIdleCores = fraction('wait-idle', 0, 1024);
const compare = v.compare.split(',').map((s) => Number(s.trim()));
if (!compare.every((n) => Number.isInteger(n) && n >= 1) || compare.length < 1) problems.push(`--compare must be process counts such as 1,2 (got ${v.compare})`);
if (v.processes !== undefined && !(/^\d+$/.test(v.processes) && Number(v.processes) >= 1)) problems.push(`--processes must be a whole number of at least 1 (got ${v.processes})`);
// Sections 1–2 always pass STRATA_GATEWAY_PROCESSES (support/gateway-process.ts would otherwise set 1): by default the
// machine's cores, what `strata serve` runs when it is unset (src/serve-processes.ts).
const sectionProcesses = v.processes ?? String(availableParallelism());
if (v.gzip !== 'true' && v.gzip !== 'false') problems.push(`--gzip must be true or false (got ${v.gzip})`);
const gzip = v.gzip === 'true';
if (v['noisy-retry-after'] !== 'honour' && v['noisy-retry-after'] !== 'ignore') problems.push(`--noisy-retry-after must be honour or ignore (got ${v['noisy-retry-after']})`);
if (problems.length) usage(problems);

const say = (line: string) => process.stderr.write(`${new Date().toISOString().slice(11, 19)} ${line}\n`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? NaN : s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};
const fmt = (n: number, digits = 0) => (Number.isFinite(n) ? n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits }) : '—');
const list = (xs: number[], digits = 0) => xs.map((x) => fmt(x, digits)).join(', ');
const statusText = (s: Record<string, number>) => Object.entries(s).sort().map(([k, n]) => `${k}×${n}`).join(' ') || '—';
const non204 = (s: Record<string, number>) => Object.entries(s).reduce((n, [k, c]) => (k === '204' ? n : n + c), 0);
const START = Date.UTC(2026, 10, 21);

// ---- the database ---------------------------------------------------------------------------------

const work = mkdtempSync(join(tmpdir(), 'strata-fairness-'));
let local: LocalPostgres | null = null;
let cleanup: (() => Promise<void>)[] = [];
const command = `npx tsx bench/fairness.ts ${process.argv.slice(2).join(' ').replace(/postgres(ql)?:\/\/[^ ]+/g, '<url>')}`;

try {
  local = v.url ? null : await startLocalPostgres(say);
  const serverUrl = v.url ?? local!.url;
  const scratch = await scratchDatabase(serverUrl, 'strata_fair', 3);
  const db = scratch.db;
  const roles: string[] = [];
  cleanup.push(() => scratch.drop(roles));
  // Its own directory (startBouncer hands it to the postgres OS user when run as root).
  const bouncerDir = mkdtempSync(join(tmpdir(), 'strata-fairness-bouncer-'));
  cleanup.push(async () => rmSync(bouncerDir, { recursive: true, force: true }));
  const bouncer = await startBouncer(new URL(serverUrl), bouncerDir);
  cleanup.push(() => bouncer.stop());
  const timescale = (await db.query<{ n: number }>(`SELECT count(*)::int AS n FROM pg_available_extensions WHERE name = 'timescaledb'`)).rows[0]!.n > 0;
  if (timescale) await migrate(db, { chunkInterval: '1 hour' });
  else await plainSchema(db);
  const pgVersion = (await db.query<{ v: string }>(`SELECT current_setting('server_version') AS v`)).rows[0]!.v;
  const tsVersion = timescale ? (await db.query<{ v: string | null }>(`SELECT extversion AS v FROM pg_extension WHERE extname = 'timescaledb'`)).rows[0]?.v ?? '?' : null;
  const databaseLine = timescale
    ? `**Database: PostgreSQL ${pgVersion} + TimescaleDB ${tsVersion}** (strata.metrics a hypertable, 1-hour chunks).`
    : `**Database: plain PostgreSQL ${pgVersion}, not TimescaleDB** — strata.metrics is a plain table (the tests' plainSchema, no hypertable, no chunks, no indexes), ${local ? `a private cluster started by the benchmark (${Object.entries(LOCAL_PG_SETTINGS).map(([k, x]) => `${k}=${x.replace(/'/g, '')}`).join(', ')})` : 'on the --url server'}. Absolute figures are not TimescaleDB's; compare the ratios within this page.`;
  say(databaseLine.replace(/\*\*/g, ''));

  // Facilities through the registry (a reader role each); the codes carry the pid so a --url server's roles never clash.
  const tokens: string[] = [];
  for (let i = 0; i < facilities; i++) {
    const code = `fair${process.pid}-${i}`;
    const f = await addFacility(db, { code, region: 'bench' });
    roles.push(readerRoleName(code));
    tokens.push(f.token);
  }
  const dbUrl = bouncer.url(scratch.name);
  // The benchmark's own processes (this one with its gateway children, the private PostgreSQL, PgBouncer): the rest of the machine's busy CPU is someone else's.
  const pidIn = (file: string) => {
    try {
      return Number(readFileSync(file, 'utf8').split('\n')[0]);
    } catch {
      return 0;
    }
  };
  const ours = [process.pid, local ? pidIn(join(local.dir, 'data', 'postmaster.pid')) : 0, pidIn(join(bouncerDir, 'pgbouncer.pid'))].filter((p) => p > 0);
  const meter = () => cpuMeter(() => ours);
  type Cpu = ReturnType<ReturnType<typeof meter>>;
  const countRows = async () => (await db.query<{ n: number }>('SELECT count(*)::int AS n FROM strata.metrics')).rows[0]!.n;
  const truncate = () => db.exec('TRUNCATE strata.metrics');

  interface Gw {
    gw: GatewayProcess;
    tree: TreeWatch;
    /** Gateway processes seen (the children of a primary, or the one process). */
    processes: number;
    stop(): Promise<void>;
  }
  /** `strata serve` with STRATA_GATEWAY_PROCESSES=`processes` when given; waits until that many gateway processes run. */
  async function startGw(o: { processes: string; discard?: boolean }): Promise<Gw> {
    const t0 = performance.now();
    const gw = await startGatewayProcess({
      STRATA_DATABASE_URL: dbUrl, STRATA_REGION: 'bench', STRATA_SPOOL_DIR: mkdtempSync(join(work, 'spool-')), STRATA_SERIES_LIMIT: '1000000',
      STRATA_GATEWAY_PROCESSES: o.processes,
      ...(o.discard ? { STRATA_BENCH_DISCARD: '1' } : {}),
    });
    const tree = watchTree(gw.child.pid!);
    // A gateway that ignores the setting runs one process: then this gives up after 10 s and reports one.
    const want = Number(o.processes);
    for (let i = 0; i < 100 && tree.gateways().length < want; i++) await sleep(100);
    // /ready answers once one process listens: wait until the others are done starting too (the tree's CPU settles).
    for (let i = 0, last = tree.cpuSeconds(); i < 60; i++) {
      await sleep(250);
      const now = tree.cpuSeconds();
      if (now - last < 0.03) break;
      last = now;
    }
    const processes = tree.gateways().length;
    say(`strata serve pid ${gw.child.pid} (${((performance.now() - t0) / 1000).toFixed(1)} s to start): ${processes} gateway process(es) ${tree.gateways().map((p) => p.pid).join(', ')} (STRATA_GATEWAY_PROCESSES=${o.processes})${o.discard ? ', STRATA_BENCH_DISCARD=1' : ''}`);
    return { gw, tree, processes, stop: async () => void (tree.stop(), await gw.stop()) };
  }

  const wl = (linesPerBatch: number, F = facilities): Required<Workload> => ({ facilities: F, seriesPerFacility: 1000, linesPerBatch, gzip, fields, precision: 'ns' });
  const bodies = (w: Workload, facility: number, count: number) => Array.from({ length: count }, (_, r) => makeBatch(w, facility, r + 1, START));
  /** Creates facility f's series (one line per tag set) with a request to each gateway process's connection, so no measured request creates one. */
  async function warmSeries(url: string, fs: number[], times: number) {
    const w = wl(1);
    for (const f of fs) {
      const b = makeBatch({ ...w, linesPerBatch: tagSets(w) }, f, 0, START);
      const s: Stream = { name: 'warm', token: tokens[f]!, bodies: [b], gzip, precision: 'ns', collectors: 1, honourRetryAfter: true };
      const answers = await Promise.all(Array.from({ length: times }, () => post(url, s, b)));
      const bad = answers.find((a) => a.status !== 204);
      if (bad) throw new Error(`warm-up of facility ${f} answered ${bad.status}: ${bad.text}`);
    }
  }
  /** drive() with the load generator's CPU (cores) measured around it. */
  async function driveMeasured(o: Parameters<typeof drive>[0]): Promise<Driven> {
    await waitIdle();
    // drive() reads o.cpu when its measured phase starts (after the warm-up and the prebuilt bodies), and once more only
    // after an idle tail of up to one progress interval: the machine's and the generator's CPU are taken over the
    // phase's own seconds from that start (sampled), as drive() measures its rates.
    let start: { at: number; m: ReturnType<typeof meter> } | null = null;
    const inner = o.cpu;
    const r = await drive({
      ...o,
      cpu: () => {
        start ??= { at: performance.now(), m: meter() };
        return inner ? inner() : 0;
      },
    });
    const began = start as { at: number; m: ReturnType<typeof meter> } | null;
    if (!began) throw new Error('drive() did not report the start of its measured phase');
    const cpu = began.m(began.at + r.seconds * 1000);
    return { ...r, generatorCores: cpu.selfCores, cpu, gatewayCpuSeconds: inner ? r.gatewayCpuSeconds : null };
  }
  /** --wait-idle: before a measured phase, up to 60 s for other processes on the machine to use at most that many cores. */
  async function waitIdle(): Promise<void> {
    if (!waitIdleCores) return;
    for (let i = 0; i < 60; i++) {
      const m = meter();
      await sleep(1000);
      const c = m();
      if (c.othersCores <= waitIdleCores) return;
      if (i === 0) say(`waiting for other processes on the machine to use at most ${waitIdleCores} cores (now ${c.othersCores}) …`);
    }
    say('the machine is still busy after 60 s; measuring anyway (see the others’ CPU column)');
  }
  type Driven = LoadResult & { generatorCores: number; cpu: Cpu };

  const gitCommit = (() => {
    try {
      const head = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: join(import.meta.dirname, '..') }).toString().trim();
      const dirty = execFileSync('git', ['status', '--porcelain', '--', 'src', 'sql', 'bin'], { cwd: join(import.meta.dirname, '..') }).toString().trim().split('\n').filter(Boolean).length;
      return dirty ? `${head} + uncommitted changes (${dirty} files in src/, sql/, bin/)` : head;
    } catch {
      return 'unknown';
    }
  })();
  const pgbouncerVersion = (() => {
    try {
      return execFileSync(process.env.STRATA_BENCH_PGBOUNCER ?? '/usr/sbin/pgbouncer', ['--version']).toString().split('\n')[0]!.replace(/^PgBouncer\s*/i, '');
    } catch {
      return 'unknown';
    }
  })();
  const nproc = execFileSync('nproc').toString().trim();
  const processesText = `STRATA_GATEWAY_PROCESSES=${sectionProcesses}${v.processes === undefined ? ' (this machine’s cores: strata serve’s default when the variable is unset)' : ''}`;

  const sections: string[] = [];
  const headline: string[] = [];
  const results: Record<string, unknown> = {};

  // ---- 1. noisy neighbour -------------------------------------------------------------------------
  if (mode === 'noisy' || mode === 'all') {
    const NOISY = 0;
    const QUIET = 1;
    const quietBodies = bodies(wl(quietLines), QUIET, 50);
    const noisyBodies = bodies(wl(noisyLines), NOISY, noisyCollectors);
    const quiet: Stream = { name: 'quiet', token: tokens[QUIET]!, bodies: quietBodies, gzip, precision: 'ns', collectors: 1, requestsPerSecond: quietRate || undefined, honourRetryAfter: true };
    const noisy: Stream = { name: 'noisy', token: tokens[NOISY]!, bodies: noisyBodies, gzip, precision: 'ns', collectors: noisyCollectors, honourRetryAfter: v['noisy-retry-after'] === 'honour' };
    const perRun: { alone: StreamsRun & { cpu: Cpu }; loaded: StreamsRun & { cpu: Cpu }; processes: number; ratio: number }[] = [];
    for (let r = 1; r <= runs; r++) {
      await truncate();
      const g = await startGw({ processes: sectionProcesses });
      try {
        await warmSeries(g.gw.url, [NOISY, QUIET], 2 * g.processes);
        say(`noisy run ${r}/${runs}: warm-up (both facilities, 5 s, not measured)`);
        await runStreams(g.gw.url, [quiet, noisy], 5);
        say(`noisy run ${r}/${runs}: quiet facility alone, ${seconds} s`);
        await waitIdle();
        let m = meter();
        const alone = { ...(await runStreams(g.gw.url, [quiet], seconds)), cpu: m() };
        say(`noisy run ${r}/${runs}: quiet facility with the noisy one saturating the gateway, ${seconds} s`);
        await waitIdle();
        m = meter();
        const loaded = { ...(await runStreams(g.gw.url, [quiet, noisy], seconds)), cpu: m() };
        const ratio = loaded.streams[0]!.ack.p99 / alone.streams[0]!.ack.p99;
        perRun.push({ alone, loaded, processes: g.processes, ratio });
        const q = loaded.streams[0]!;
        const n = loaded.streams[1]!;
        say(`  quiet alone p50/p99 ${alone.streams[0]!.ack.p50}/${alone.streams[0]!.ack.p99} ms; loaded ${q.ack.p50}/${q.ack.p99} ms (×${ratio.toFixed(2)}), quiet answers ${statusText(q.statuses)}; noisy ${fmt(n.ackedRowsPerSecond)} metrics/s acked, answers ${statusText(n.statuses)}; generator ${loaded.generatorCores} cores; other processes on the machine ${alone.cpu.othersCores} / ${loaded.cpu.othersCores} cores`);
      } finally {
        await g.stop();
      }
    }
    const ratios = perRun.map((p) => p.ratio);
    const quietNon204 = perRun.map((p) => non204(p.loaded.streams[0]!.statuses) + non204(p.alone.streams[0]!.statuses));
    const mRatio = median(ratios);
    headline.push(`| quiet facility ack p99 under a saturating neighbour ÷ alone | ≤ 2 | **${fmt(mRatio, 2)}** (${list(ratios, 2)}) | ${mRatio <= 2 ? 'yes' : 'no'} |`);
    headline.push(`| quiet facility answers other than 204 (alone + loaded, per run) | none | **${fmt(median(quietNon204))}** (${list(quietNon204)}) | ${quietNon204.every((n) => n === 0) ? 'yes' : 'no'} |`);
    sections.push(
      '## 1. Noisy neighbour',
      '',
      `Quiet facility: 1 collector, ${quietLines}-line requests (${fmt(quietLines * fields)} metrics), ${quietRate ? `open loop at ${quietRate} requests/s (${fmt(quietRate * quietLines * fields)} metrics/s; at most one request in flight)` : 'closed loop'}. ` +
        `Noisy facility: ${noisyCollectors} collectors, ${fmt(noisyLines)}-line requests (${fmt(noisyLines * fields)} metrics), closed loop (each sends again as soon as it is answered; after a 429/503 it ${noisy.honourRetryAfter ? 'waits the Retry-After, as Telegraf does' : 'sends again at once, ignoring Retry-After'}). ` +
        `Prebuilt ${gzip ? 'gzip ' : 'uncompressed '}bodies, ${fields} fields per line, 1,000 series per facility. Per run: a fresh gateway, 5 s warm-up with both (not measured), ${seconds} s quiet alone, ${seconds} s both. Latency is request sent → 204 received; p99 is the ⌊0.99·n⌋-th of the n acks in order (near the slowest when n is small). The load generator's event-loop delay bounds what it adds to a measured latency.`,
      '',
      '| run | gateway processes | quiet alone p50 / p99 ms (acks) | quiet loaded p50 / p99 ms (acks) | p99 loaded ÷ alone | quiet answers alone | quiet answers loaded | quiet late alone / loaded | noisy acked metrics/s | noisy answers | generator CPU loaded (cores) | generator loop delay p99 alone / loaded ms | machine busy alone / loaded (cores) | others’ CPU alone / loaded (cores) |',
      '| --- | ---: | ---: | ---: | ---: | --- | --- | ---: | ---: | --- | ---: | ---: | ---: | ---: |',
      ...perRun.map((p, i) => {
        const a = p.alone.streams[0]!;
        const q = p.loaded.streams[0]!;
        const n = p.loaded.streams[1]!;
        return `| ${i + 1} | ${p.processes} | ${a.ack.p50} / ${a.ack.p99} (${a.ack.count}) | ${q.ack.p50} / ${q.ack.p99} (${q.ack.count}) | ${p.ratio.toFixed(2)} | ${statusText(a.statuses)} | ${statusText(q.statuses)} | ${a.late} / ${q.late} | ${fmt(n.ackedRowsPerSecond)} | ${statusText(n.statuses)} | ${p.loaded.generatorCores} | ${p.alone.generatorLoopDelay.p99} / ${p.loaded.generatorLoopDelay.p99} | ${p.alone.cpu.machineCores} / ${p.loaded.cpu.machineCores} | ${p.alone.cpu.othersCores} / ${p.loaded.cpu.othersCores} |`;
      }),
      `| **median** | | ${fmt(median(perRun.map((p) => p.alone.streams[0]!.ack.p50)), 1)} / ${fmt(median(perRun.map((p) => p.alone.streams[0]!.ack.p99)), 1)} | ${fmt(median(perRun.map((p) => p.loaded.streams[0]!.ack.p50)), 1)} / ${fmt(median(perRun.map((p) => p.loaded.streams[0]!.ack.p99)), 1)} | **${fmt(mRatio, 2)}** | | | | ${fmt(median(perRun.map((p) => p.loaded.streams[1]!.ackedRowsPerSecond)))} | | | | | |`,
      '',
      ...(() => {
        const samples = [...new Set(perRun.flatMap((p) => [...p.alone.streams, ...p.loaded.streams].flatMap((s) => s.samples.map((x) => `${s.name}: ${x}`))))].slice(0, 6);
        return samples.length ? ['Sample answers other than 204:', '', ...samples.map((x) => `- ${x.replace(/\s+/g, ' ')}`), ''] : [];
      })(),
    );
    results.noisy = { quiet: { lines: quietLines, requestsPerSecond: quietRate }, noisy: { collectors: noisyCollectors, lines: noisyLines, retryAfter: v['noisy-retry-after'] }, medianP99Ratio: mRatio, runs: perRun };
  }

  // ---- 2. latency at 80% of the maximum -----------------------------------------------------------
  if (mode === 'latency' || mode === 'all') {
    const perRun: { processes: number; max: Driven; one: Driven; many: Driven; offered: number }[] = [];
    for (let r = 1; r <= runs; r++) {
      await truncate();
      const g = await startGw({ processes: sectionProcesses });
      try {
        const base = { url: g.gw.url, intervalS: Math.max(5, Math.ceil(seconds / 2)), count: countRows, log: say, durationS: seconds };
        say(`latency run ${r}/${runs}: 1 facility, ${collectors} collectors, ${lines}-line requests, closed loop ${seconds} s (the maximum)`);
        const max = await driveMeasured({ ...base, tokens: tokens.slice(0, 1), workload: wl(lines, 1), clients: collectors, prebuilt: Math.max(collectors, 16) });
        const offered = Math.round(max.rowsPerSecond * load);
        await truncate();
        say(`latency run ${r}/${runs}: 1 facility, open loop at ${fmt(offered)} metrics/s (${load} × ${fmt(max.rowsPerSecond)})`);
        const one = await driveMeasured({ ...base, tokens: tokens.slice(0, 1), workload: wl(lines, 1), clients: collectors, rate: offered, prebuilt: Math.max(collectors, 16) });
        await truncate();
        say(`latency run ${r}/${runs}: ${facilities} facilities (one collector each), open loop at ${fmt(offered)} metrics/s`);
        const many = await driveMeasured({ ...base, tokens, workload: wl(lines, facilities), clients: facilities, rate: offered, prebuilt: facilities * 2 });
        perRun.push({ processes: g.processes, max, one, many, offered });
        say(`  max ${fmt(max.rowsPerSecond)} rows/s; 1 facility at ${load}: p50/p99 ${one.ack.p50}/${one.ack.p99} ms; ${facilities} facilities: ${many.ack.p50}/${many.ack.p99} ms`);
      } finally {
        await g.stop();
      }
    }
    const p99One = perRun.map((p) => p.one.ack.p99);
    const p99Many = perRun.map((p) => p.many.ack.p99);
    headline.push(`| 1 facility, ${collectors} collectors, ${fmt(lines)}-line requests: ack p99 at ${Math.round(load * 100)}% of its maximum | ≤ 250 ms | **${fmt(median(p99One), 1)} ms** (${list(p99One, 1)}) | ${median(p99One) <= 250 ? 'yes' : 'no'} |`);
    headline.push(`| ${facilities} facilities at the same offered rate: ack p99 | ≤ 250 ms | **${fmt(median(p99Many), 1)} ms** (${list(p99Many, 1)}) | ${median(p99Many) <= 250 ? 'yes' : 'no'} |`);
    const row = (label: string, l: Driven, offered?: number) =>
      `| ${label} | ${offered ? fmt(offered) : 'closed loop'} | ${fmt(l.rowsPerSecond)} | ${l.ack.p50} | ${l.ack.p99} | ${l.ack.p999} | ${l.retried} | ${l.failed} | ${offered ? l.late : '—'} | ${l.lostRows} | ${l.generatorCores} | ${l.cpu.machineCores} / ${l.cpu.othersCores} |`;
    sections.push(
      `## 2. Ack latency at ${Math.round(load * 100)}% of the maximum`,
      '',
      `${fmt(lines)}-line requests (${fmt(lines * fields)} metrics, ${gzip ? 'gzip' : 'uncompressed'}, prebuilt), ${fields} fields per line, 1,000 series per facility. The maximum: one facility, ${collectors} collectors, closed loop for ${seconds} s, rows committed in the database per second. Then an open loop at ${load} × that maximum, ${seconds} s each: the same facility with ${collectors} collectors, then ${facilities} facilities with one collector each (the same offered rate, not a ${facilities}-facility maximum). Ack latency includes any 429 retries (after Retry-After, as load.ts does); one gateway per run, the table emptied between phases.`,
      '',
      '| run / phase | offered metrics/s | committed metrics/s | ack p50 ms | ack p99 ms | ack p99.9 ms | 429/503 retried | failed | late | rows lost | generator CPU (cores) | machine busy / others’ CPU (cores) |',
      '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
      ...perRun.flatMap((p, i) => [
        row(`${i + 1}: 1 facility, maximum (${p.processes} gateway process${p.processes > 1 ? 'es' : ''})`, p.max),
        row(`${i + 1}: 1 facility at ${load}`, p.one, p.offered),
        row(`${i + 1}: ${facilities} facilities at ${load}`, p.many, p.offered),
      ]),
      '',
      `Medians: maximum ${fmt(median(perRun.map((p) => p.max.rowsPerSecond)))} metrics/s; ack p50/p99 at ${load}: 1 facility ${fmt(median(perRun.map((p) => p.one.ack.p50)), 1)}/${fmt(median(p99One), 1)} ms, ${facilities} facilities ${fmt(median(perRun.map((p) => p.many.ack.p50)), 1)}/${fmt(median(p99Many), 1)} ms.`,
      '',
    );
    results.latency = { lines, collectors, facilities, load, runs: perRun.map((p) => ({ processes: p.processes, offered: p.offered, max: p.max, oneFacility: p.one, facilities: p.many })) };
  }

  // ---- 3. gateway processes -----------------------------------------------------------------------
  if (mode === 'processes' || mode === 'all') {
    const w = wl(lines, facilities);
    type Only = { processes: number; requested: number; rowsPerSecond: number; gatewayCores: number; gatewayUsPerMetric: number; generatorCores: number; peakRss: ProcStat[]; cpu: Cpu };
    const only: Only[][] = [];
    for (let r = 1; r <= runs; r++) {
      const round: Only[] = [];
      for (const p of r % 2 ? compare : [...compare].reverse()) {
        const g = await startGw({ processes: String(p), discard: true });
        try {
          say(`processes run ${r}/${runs}: gateway only (STRATA_BENCH_DISCARD=1), STRATA_GATEWAY_PROCESSES=${p}, ${facilities} facilities, ${facilities} collectors, closed loop ${seconds} s`);
          const l = await driveMeasured({ url: g.gw.url, tokens, workload: w, clients: facilities, durationS: seconds, intervalS: Math.max(5, Math.ceil(seconds / 2)), log: say, prebuilt, cpu: () => g.tree.cpuSeconds() });
          const cpu = l.gatewayCpuSeconds ?? NaN;
          round.push({ processes: g.processes, requested: p, rowsPerSecond: l.rowsPerSecond, gatewayCores: +(cpu / l.seconds).toFixed(2), gatewayUsPerMetric: +((cpu * 1e6) / Math.max(1, l.ackedRows)).toFixed(2), generatorCores: l.generatorCores, peakRss: g.tree.gateways(), cpu: l.cpu });
          say(`  ${fmt(l.rowsPerSecond)} metrics/s acknowledged; gateway ${(cpu / l.seconds).toFixed(2)} cores over ${g.processes} process(es); generator ${l.generatorCores} cores; other processes on the machine ${l.cpu.othersCores} cores`);
        } finally {
          await g.stop();
        }
      }
      only.push(compare.map((p) => round.find((x) => x.requested === p)!));
    }
    const [lo, hi] = [compare[0]!, compare.at(-1)!];
    const ratios = only.map((round) => round.at(-1)!.rowsPerSecond / round[0]!.rowsPerSecond);
    const mRatio = median(ratios);

    // Peak RSS at overload, writing to the database.
    type Over = { requested: number; processes: number; max: number; offered: number; committed: number; retried: number; failed: number; late: number; lost: number; ackP99: number; generatorCores: number; peak: ProcStat[]; resetPeak: boolean; cpu: Cpu };
    const over: Over[] = [];
    for (const p of compare) {
      await truncate();
      const g = await startGw({ processes: String(p) });
      try {
        const base = { url: g.gw.url, tokens, workload: w, clients: facilities, intervalS: Math.max(5, Math.ceil(seconds / 2)), count: countRows, log: say, prebuilt };
        say(`processes: STRATA_GATEWAY_PROCESSES=${p}, writing: closed loop ${seconds} s (the maximum)`);
        const max = await driveMeasured({ ...base, durationS: seconds });
        await truncate();
        // Peak RSS from here on: VmHWM reset through clear_refs (Linux ≥ 4.0), sampled every 250 ms as well.
        const resetPeak = g.tree.gateways().every((s) => {
          try {
            writeFileSync(`/proc/${s.pid}/clear_refs`, '5');
            return true;
          } catch {
            return false;
          }
        });
        const watch = watchTree(g.gw.child.pid!);
        const offered = Math.round(max.rowsPerSecond * overload);
        say(`processes: STRATA_GATEWAY_PROCESSES=${p}, open loop at ${fmt(offered)} metrics/s (${overload} × ${fmt(max.rowsPerSecond)}) for ${overloadSeconds} s`);
        const o = await driveMeasured({ ...base, durationS: overloadSeconds, rate: offered });
        const peak = watch.gateways();
        watch.stop();
        over.push({ requested: p, processes: g.processes, max: max.rowsPerSecond, offered, committed: o.rowsPerSecond, retried: o.retried, failed: o.failed, late: o.late, lost: o.lostRows, ackP99: o.ack.p99, generatorCores: o.generatorCores, peak, resetPeak, cpu: o.cpu });
        say(`  peak RSS ${peak.map((s) => `${s.peakRssMiB} MiB (pid ${s.pid})`).join(', ')}; committed ${fmt(o.rowsPerSecond)} metrics/s`);
      } finally {
        await g.stop();
      }
    }
    const worstRss = Math.max(...over.flatMap((o) => o.peak.map((s) => s.peakRssMiB)));
    headline.push(`| gateway only, metrics/s with STRATA_GATEWAY_PROCESSES=${hi} ÷ ${lo} | ≥ 1.7 | **${fmt(mRatio, 2)}** (${list(ratios, 2)}) | ${mRatio >= 1.7 ? 'yes' : 'no'} |`);
    headline.push(`| peak RSS of any gateway process at ${overload}× overload | ≤ 512 MiB | **${worstRss} MiB** (${over.map((o) => `${o.requested}: ${o.peak.map((s) => s.peakRssMiB).join(' + ')}`).join('; ')}) | ${worstRss <= 512 ? 'yes' : 'no'} |`);
    sections.push(
      '## 3. Gateway processes',
      '',
      `Gateway only: STRATA_BENCH_DISCARD=1 (parse + encode; rows acknowledged and discarded, as \`bench/run.ts --gateway-only\`), ${facilities} facilities, ${facilities} keep-alive collectors, closed loop ${seconds} s, ${fmt(lines)}-line requests (${fmt(lines * fields)} metrics, ${gzip ? 'gzip' : 'uncompressed'}) from ${prebuilt} prebuilt bodies (so the load generator builds${gzip ? ' and gzips' : ''} nothing while measuring). Process counts alternate in order between runs. Gateway CPU is the sum over the \`strata serve\` process tree (primary and gateway processes, from /proc); the load generator's is this benchmark process's own, both over the wall time of the phase, in cores of the ${nproc} this machine has.`,
      '',
      `| run | STRATA_GATEWAY_PROCESSES | gateway processes seen | acknowledged metrics/s | gateway CPU (cores) | gateway CPU µs/metric | load generator CPU (cores) | machine busy / others’ CPU (cores) | peak RSS MiB per process |`,
      '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |',
      ...only.flatMap((round, i) => round.map((x) => `| ${i + 1} | ${x.requested} | ${x.processes} | ${fmt(x.rowsPerSecond)} | ${x.gatewayCores} | ${x.gatewayUsPerMetric} | ${x.generatorCores} | ${x.cpu.machineCores} / ${x.cpu.othersCores} | ${x.peakRss.map((s) => s.peakRssMiB).join(', ')} |`)),
      ...compare.map((p, j) => `| **median** | ${p} | | **${fmt(median(only.map((round) => round[j]!.rowsPerSecond)))}** | ${fmt(median(only.map((round) => round[j]!.gatewayCores)), 2)} | ${fmt(median(only.map((round) => round[j]!.gatewayUsPerMetric)), 2)} | ${fmt(median(only.map((round) => round[j]!.generatorCores)), 2)} | ${fmt(median(only.map((round) => round[j]!.cpu.othersCores)), 2)} (others) | |`),
      '',
      `Ratio ${hi} ÷ ${lo} processes per run: ${list(ratios, 2)}; median **${fmt(mRatio, 2)}**. On ${nproc} cores the load generator competes with the gateway processes for the same CPU (its share is in the table), so this ratio is a lower bound of what a second core gives a gateway host.` +
        (() => {
          const one = median(only.map((round) => round[0]!.gatewayCores));
          const gen = median(only.map((round) => round.at(-1)!.generatorCores));
          return lo === 1 && one > 0 ? ` One process already used ${fmt(one, 2)} cores (its main thread plus V8's GC threads${gzip ? " and libuv's threads inflating gzip" : ''}), so with the generator's ${fmt(gen, 2)} cores the most ${hi} processes could reach on ${nproc} cores is about ${fmt((Number(nproc) - gen) / one, 2)}× one.` : '';
        })(),
      '',
      `Overload, writing through PgBouncer to the database: per process count a fresh gateway, its closed-loop maximum (${facilities} facilities, ${facilities} collectors, ${seconds} s), then an open loop at ${overload} × it for ${overloadSeconds} s with at most ${facilities} requests in flight; peak RSS (VmHWM, reset before the open loop${over.every((o) => o.resetPeak) ? '' : ' where /proc/<pid>/clear_refs allowed it'}) of every gateway process.`,
      '',
      '| STRATA_GATEWAY_PROCESSES | gateway processes | closed-loop maximum metrics/s | offered metrics/s | committed metrics/s | ack p99 ms | 429/503 retried | late | rows lost | generator CPU (cores) | machine busy / others’ CPU (cores) | peak RSS MiB per process |',
      '| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |',
      ...over.map((o) => `| ${o.requested} | ${o.processes} | ${fmt(o.max)} | ${fmt(o.offered)} | ${fmt(o.committed)} | ${o.ackP99} | ${o.retried} | ${o.late} | ${o.lost} | ${o.generatorCores} | ${o.cpu.machineCores} / ${o.cpu.othersCores} | ${o.peak.map((s) => `${s.peakRssMiB} (pid ${s.pid})`).join(', ')}${o.resetPeak ? '' : ' (not reset: since start)'} |`),
      '',
    );
    results.processes = { compare, prebuilt, ratio: mRatio, gatewayOnly: only, overload: over };
  }

  const lost = JSON.stringify(results).match(/"lostRows":[1-9]/) !== null;
  const others = [...JSON.stringify(results).matchAll(/"othersCores":([0-9.]+)/g)].map((m) => Number(m[1]));
  const table = [
    databaseLine,
    '',
    `Gateway: \`strata serve\` in its own process (bench/support/gateway-process.ts) → PgBouncer ${pgbouncerVersion} in transaction pooling → the database; gateway defaults otherwise (20,000 rows / 100 ms / 4 writers). ${mode === 'processes' ? '' : `${processesText} for sections 1–2. `}Load generator: this Node process on the same machine (${nproc} cores, shared with the gateway, PgBouncer and PostgreSQL${local ? '' : ' unless --url points elsewhere'}). Git: ${gitCommit}.`,
    '',
    'Machine busy and others’ CPU (cores, over each phase): the busy CPU of /proc/stat, and the part of it not used by the benchmark’s own processes (this one with its `strata serve` children, the private PostgreSQL, PgBouncer) — other work on a shared machine, competing with the benchmark for the same cores.',
    '',
    `Headline (medians of ${runs} run${runs > 1 ? 's' : ''}; the runs in brackets):`,
    '',
    '| figure | target | measured | met? |',
    '| --- | --- | --- | --- |',
    ...headline,
    '',
    `Other processes on the machine used a median ${fmt(median(others), 2)} cores (${fmt(Math.min(...others), 2)}–${fmt(Math.max(...others), 2)}) of the ${nproc} during the ${others.length} measured phases${median(others) > 0.2 ? ': the machine was shared while measuring, so the spread between runs is wide — re-run on a quiet machine (or with --wait-idle 0.2) before relying on a figure' : ''}.`,
    '',
    ...sections,
  ];
  const name = v.name ?? (mode === 'all' ? 'fairness' : `fairness-${mode}`);
  const versions: Record<string, string> = { postgres: pgVersion, timescaledb: tsVersion ?? 'none (plain PostgreSQL)', pgbouncer: pgbouncerVersion, git: gitCommit };
  const configuration = { mode, nproc, runs, seconds, fields, gzip, gatewayProcesses: mode === 'processes' ? compare.join(' vs ') : sectionProcesses, database: timescale ? 'timescaledb' : 'plain postgresql', ...(local ? LOCAL_PG_SETTINGS : {}) };
  console.log(writeTable(v.out, name, command, versions, configuration, table, results));
  if (lost) {
    say('ROWS LOST in a run (see rows lost)');
    process.exitCode = 1;
  }
} finally {
  for (const c of cleanup.reverse()) await c().catch((err: unknown) => say(`cleanup: ${String(err)}`));
  cleanup = [];
  await local?.stop();
  rmSync(work, { recursive: true, force: true });
}
