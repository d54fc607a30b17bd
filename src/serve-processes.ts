// `strata serve --processes N` (STRATA_GATEWAY_PROCESSES; default the machine's cores): one gateway
// host uses every core. A node:cluster primary forks N processes, each running today's gateway
// (serve.ts's options, ingest/gateway.ts) on the same listening address (the primary accepts and
// hands connections round-robin), with a spool, writers and database pool of its own:
//   <spoolDir>/spool.lock        the primary's: one `strata serve` (all its processes) per spool dir
//   <spoolDir>/process-<i>/      process i's spool; a replacement keeps the index, so it takes over
//                                the dead one's lock (pid-based, spool-lock.ts) and replays its spool
// Segments a run with another process count left elsewhere (the top level after a single-process
// run, process-<k> for k ≥ N after a larger one) are moved into process-0 before the processes start,
// and into the top level by a single-process run, so none is stranded.
// The primary holds no database connection and answers no request. It
//   - prints one announcement line once all N listen (serve.ts's line plus the processes and pids);
//   - replaces a process that exits while not shutting down (same index), after 1 s, doubling up to
//     30 s while replacements keep exiting within a minute of their start (a crash loop, logged);
//   - aggregates /metrics: the process a scrape reaches asks the primary, which collects every ready
//     process's registry and sums them with prom-client's AggregatorRegistry.aggregate;
//   - on SIGTERM/SIGINT sends SIGTERM to every process (each stops as `strata serve` does: flush,
//     spool what cannot be committed, answer what is in flight) and exits 0 once all exited; a
//     second signal SIGKILLs them (every acknowledged row is already committed or in a spool).
// A process that fails to start before the first announcement (port in use, spool locked by another
// gateway) stops the others and `strata serve` exits 1: the operator has to act.
// If the primary itself dies, node:cluster makes each process exit at once (like kill -9: what they
// had acknowledged is durable, the rest was never acknowledged).
import cluster, { type Worker } from 'node:cluster';
import { mkdir } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { fileURLToPath } from 'node:url';
import { AggregatorRegistry, Counter, Gauge, Registry } from 'prom-client';
import { requireSetting, type Config } from './config.ts';
import { openDb } from './db/open.ts';
import type { Db } from './db/port.ts';
import { StrataError, UsageError, errorText } from './errors.ts';
import { startGateway, type Gateway } from './ingest/gateway.ts';
import { adoptStranded, processSpoolDir } from './ingest/spool-adopt.ts';
import { acquireLock, releaseLock } from './ingest/spool-lock.ts';
import type { Logger } from './log.ts';
import { reloadTlsOnSighup, serve } from './serve.ts';
import { gatewayDbOptions, gatewayOptions } from './settings.ts';

/** Set by the primary in each process it forks: the process's index (its spool subdirectory). */
export const INDEX_ENV = 'STRATA_GATEWAY_PROCESS_INDEX';
export const MAX_PROCESSES = 1024;
/** Replacement delays: the first, and the ceiling of the doubling while a process keeps exiting soon after it started. */
export const RESTART_MIN_MS = 1_000;
export const RESTART_MAX_MS = 30_000;
/** A process that ran at least this long before it exited starts the backoff afresh. */
export const STABLE_MS = 60_000;
/** How long the primary waits for the processes' registries, and a process for the primary's aggregate. */
const COLLECT_TIMEOUT_MS = 5_000;
const ASK_TIMEOUT_MS = 10_000;
const BIN = fileURLToPath(new URL('../bin/strata.js', import.meta.url));
const NUMBERS: Record<string, number> = { SIGINT: 2, SIGTERM: 15 };

type MetricsJson = Awaited<ReturnType<Registry['getMetricsAsJSON']>>;
/** Process → primary. */
type Up =
  | { type: 'strata:ready'; url: string; target: string; discard: boolean }
  | { type: 'strata:failed'; message: string }
  | { type: 'strata:metrics'; id: number }
  | { type: 'strata:registry'; id: number; metrics?: MetricsJson; error?: string };
/** Primary → process. */
type Down = { type: 'strata:metrics'; id: number; text?: string; error?: string } | { type: 'strata:collect'; id: number };

const isMessage = (m: unknown): m is { type: string } => typeof m === 'object' && m !== null && typeof (m as { type?: unknown }).type === 'string';

/** `--processes` if given, else STRATA_GATEWAY_PROCESSES, else the machine's cores. */
export function gatewayProcessCount(flag: string | undefined, config: Config): number {
  if (flag === undefined) return config.gatewayProcesses ?? availableParallelism();
  const n = Number(flag.trim());
  if (!/^\s*\d+\s*$/.test(flag) || n < 1 || n > MAX_PROCESSES) {
    throw new UsageError(`strata serve: --processes ${JSON.stringify(flag)} must be a whole number from 1 to ${MAX_PROCESSES} (gateway processes on this host; default STRATA_GATEWAY_PROCESSES, else this machine's ${availableParallelism()} cores)`);
  }
  return n;
}

/**
 * `strata serve`: in a process forked by the primary, that process's gateway; with one process,
 * today's single gateway (serve.ts) on the top-level spool; else the primary of `processes`.
 * `argv` is the command line the processes are started with (bin/strata.js, the same command).
 */
export async function serveProcesses(config: Config, log: Logger, out: (text: string) => void, o: { processes: number; argv: string[] }): Promise<void> {
  const index = process.env[INDEX_ENV];
  if (cluster.isWorker && index !== undefined) return runProcess(config, log, Number(index));
  // Checked here, before any process starts, so a missing setting is reported once.
  requireSetting(config, 'databaseUrl', 'for strata serve (the gateway writes through PgBouncer)');
  const region = requireSetting(config, 'region', 'for strata serve (the gateway accepts only facilities of its region)');
  const spoolDir = gatewayOptions(config, region).spoolDir;
  if (o.processes === 1) {
    await adoptStranded(spoolDir, 1, log, false);
    return serve(config, log, out);
  }
  return runPrimary(config, log, out, { processes: o.processes, argv: o.argv, region, spoolDir });
}

// ---- a gateway process ------------------------------------------------------------------------------

/** Resolves at the first SIGTERM or SIGINT; later ones are ignored (the primary may forward one the process already had). */
function stopRequested(log: Logger): Promise<string> {
  return new Promise((resolve) => {
    let first: string | null = null;
    const on = (sig: NodeJS.Signals) => {
      if (first) return void log.info('signal received while stopping; still stopping', { signal: sig });
      first = sig;
      log.info('signal received', { signal: sig });
      resolve(sig);
    };
    process.on('SIGTERM', on);
    process.on('SIGINT', on);
  });
}

function send(message: Up): Promise<void> {
  return new Promise((resolve) => {
    if (!process.connected || !process.send) return resolve();
    process.send(message, undefined, {}, () => resolve());
  });
}

/** Metrics of this process under its index, summed by the aggregate into per-process series. */
function processMetrics(gateway: Gateway, index: number): void {
  const registry = gateway.metrics.registry;
  const process_ = String(index);
  const info = new Gauge({ name: 'strata_gateway_process_info', help: 'One per gateway process of strata serve --processes: its index and pid', labelNames: ['process', 'pid'], registers: [registry] });
  info.set({ process: process_, pid: String(process.pid) }, 1);
  const requests = gateway.metrics.requests;
  new Counter({
    name: 'strata_gateway_process_requests_total',
    help: 'HTTP requests answered by each gateway process (since it started), by endpoint',
    labelNames: ['process', 'endpoint'],
    registers: [registry],
    async collect() {
      this.reset();
      for (const v of (await requests.get()).values) this.inc({ process: process_, endpoint: String(v.labels.endpoint) }, v.value);
    },
  });
  const rows = gateway.metrics.rowsReceived;
  new Counter({
    name: 'strata_gateway_process_rows_received_total',
    help: 'Rows parsed from accepted requests by each gateway process (since it started)',
    labelNames: ['process'],
    registers: [registry],
    async collect() {
      this.reset();
      this.inc({ process: process_ }, (await rows.get()).values.reduce((n, v) => n + v.value, 0));
    },
  });
}

async function runProcess(config: Config, parentLog: Logger, index: number): Promise<void> {
  const log = parentLog.child({ process: index, pid: process.pid });
  const stop = stopRequested(log);
  const worker = cluster.worker!;
  let nextId = 0;
  const asked = new Map<number, { resolve: (text: string) => void; reject: (err: Error) => void; timer: NodeJS.Timeout }>();
  let gateway: Gateway | undefined;
  let db: Db | undefined;
  // The primary forwards its SIGHUP to every process.
  const stopReloading = reloadTlsOnSighup(config, () => gateway, log);
  const onMessage = (m: unknown) => {
    if (!isMessage(m)) return;
    const msg = m as Down;
    if (msg.type === 'strata:metrics') {
      const a = asked.get(msg.id);
      if (!a) return;
      asked.delete(msg.id);
      clearTimeout(a.timer);
      if (msg.error !== undefined) a.reject(new StrataError('metrics', `aggregated metrics: ${msg.error}`));
      else a.resolve(msg.text ?? '');
    } else if (msg.type === 'strata:collect') {
      const registry = gateway?.metrics.registry;
      if (!registry) return void send({ type: 'strata:registry', id: msg.id, metrics: [] });
      registry.getMetricsAsJSON().then(
        (metrics) => send({ type: 'strata:registry', id: msg.id, metrics }),
        (err: unknown) => send({ type: 'strata:registry', id: msg.id, error: errorText(err) }),
      );
    }
  };
  /** GET /metrics on this process: the aggregate over all processes, from the primary. */
  const aggregated = () =>
    new Promise<string>((resolve, reject) => {
      if (!process.connected) return reject(new StrataError('metrics', 'aggregated metrics: the primary process is gone'));
      const id = nextId++;
      const timer = setTimeout(() => {
        asked.delete(id);
        reject(new StrataError('metrics', `aggregated metrics: the primary did not answer within ${ASK_TIMEOUT_MS / 1000} s`));
      }, ASK_TIMEOUT_MS);
      asked.set(id, { resolve, reject, timer });
      void send({ type: 'strata:metrics', id });
    });
  process.on('message', onMessage);
  try {
    try {
      const url = requireSetting(config, 'databaseUrl', 'for strata serve (the gateway writes through PgBouncer)');
      const region = requireSetting(config, 'region', 'for strata serve (the gateway accepts only facilities of its region)');
      const options = gatewayOptions(config, region);
      // As serve.ts: writers + 2 connections per process (so PgBouncer's pool must allow N × that).
      db = await openDb(url, gatewayDbOptions(config, log));
      gateway = await startGateway(db, log, {
        ...options,
        spoolDir: processSpoolDir(options.spoolDir, index),
        ...(config.benchDiscard ? { discardRows: true } : {}),
        metricsText: aggregated,
      });
    } catch (err) {
      await db?.close().catch(() => {});
      await send({ type: 'strata:failed', message: errorText(err) });
      throw err;
    }
    processMetrics(gateway, index);
    log.info('gateway process ready', { url: gateway.url });
    await send({ type: 'strata:ready', url: gateway.url, target: db.target, discard: !!config.benchDiscard });
    await stop;
    try {
      await gateway.stop();
    } finally {
      await db.close().catch((err) => log.warn('closing the database failed', { error: err }));
    }
  } finally {
    stopReloading();
    process.off('message', onMessage);
    for (const a of asked.values()) clearTimeout(a.timer);
    // The IPC channel would keep the process alive; once it is closed the process exits with main()'s status.
    if (worker.isConnected()) worker.disconnect();
  }
}

// ---- the primary ------------------------------------------------------------------------------------

interface Slot {
  index: number;
  worker: Worker | null;
  pid: number;
  startedAt: number;
  ready: boolean;
  everReady: boolean;
  /** Exits in a row within STABLE_MS of their start. */
  quickExits: number;
  restartTimer: NodeJS.Timeout | null;
  /** What the process said when it failed to start. */
  failure: string | null;
}

/** Collects the ready processes' registries for one aggregate; a process that exits meanwhile is left out. */
class Collector {
  private nextId = 0;
  private readonly pending = new Map<number, { waiting: Map<number, number>; parts: MetricsJson[]; settle: (err: Error | null) => void }>();

  collect(slots: Slot[]): Promise<MetricsJson[]> {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const waiting = new Map(slots.map((s) => [s.worker!.id, s.index] as [number, number]));
      const parts: MetricsJson[] = [];
      const timer = setTimeout(
        () => settle(new StrataError('metrics', `gateway process(es) ${[...waiting.values()].join(', ')} did not send their metrics within ${COLLECT_TIMEOUT_MS / 1000} s`)),
        COLLECT_TIMEOUT_MS,
      );
      const settle = (err: Error | null) => {
        clearTimeout(timer);
        this.pending.delete(id);
        if (err) reject(err);
        else resolve(parts);
      };
      this.pending.set(id, { waiting, parts, settle });
      if (!waiting.size) return settle(null);
      for (const s of slots) s.worker!.send({ type: 'strata:collect', id } satisfies Down, undefined, {}, (err) => err && this.drop(s.worker?.id ?? -1));
    });
  }

  reply(workerId: number, msg: Extract<Up, { type: 'strata:registry' }>): void {
    const p = this.pending.get(msg.id);
    if (!p?.waiting.has(workerId)) return;
    if (msg.error !== undefined) return p.settle(new StrataError('metrics', `gateway process ${p.waiting.get(workerId)}: ${msg.error}`));
    p.waiting.delete(workerId);
    p.parts.push(msg.metrics ?? []);
    if (!p.waiting.size) p.settle(null);
  }

  /** A process exited: the aggregates waiting for it do without it. */
  drop(workerId: number): void {
    for (const p of [...this.pending.values()]) if (p.waiting.delete(workerId) && !p.waiting.size) p.settle(null);
  }
}

async function runPrimary(config: Config, log: Logger, out: (text: string) => void, o: { processes: number; argv: string[]; region: string; spoolDir: string }): Promise<void> {
  const n = o.processes;
  await mkdir(o.spoolDir, { recursive: true });
  // One `strata serve` per spool directory, whatever its process count: its primary holds the top level.
  await acquireLock(o.spoolDir, log);
  try {
    await adoptStranded(o.spoolDir, n, log, true);
    await supervise(config, log, out, o);
  } finally {
    await releaseLock(o.spoolDir);
  }
}

function supervise(config: Config, log: Logger, out: (text: string) => void, o: { processes: number; argv: string[]; region: string }): Promise<void> {
  const n = o.processes;
  const own = new Registry();
  new Gauge({ name: 'strata_gateway_processes', help: 'Gateway processes strata serve runs (--processes, STRATA_GATEWAY_PROCESSES)', registers: [own] }).set(n);
  const restarts = new Counter({ name: 'strata_gateway_process_restarts_total', help: 'Gateway processes replaced after they exited, by index', labelNames: ['process'], registers: [own] });
  const collector = new Collector();
  const slots: Slot[] = Array.from({ length: n }, (_, index) => ({ index, worker: null, pid: 0, startedAt: 0, ready: false, everReady: false, quickExits: 0, restartTimer: null, failure: null }));
  let announced = false;
  let stopping = false;
  let forced: string | null = null;
  let startupError: string | null = null;
  const stopFailures: string[] = [];
  let finish!: () => void;
  const finished = new Promise<void>((r) => (finish = r));

  cluster.setupPrimary({ exec: BIN, args: o.argv, silent: false });

  const aggregate = async (): Promise<string> => {
    const parts = await collector.collect(slots.filter((s) => s.ready && s.worker?.isConnected()));
    parts.push(await own.getMetricsAsJSON());
    return AggregatorRegistry.aggregate(parts).metrics();
  };

  const fork = (slot: Slot) => {
    const worker = cluster.fork({ [INDEX_ENV]: String(slot.index) });
    Object.assign(slot, { worker, pid: worker.process.pid ?? 0, startedAt: Date.now(), ready: false, failure: null });
    log.info(`gateway process ${slot.index} started (pid ${slot.pid})`, { process: slot.index, pid: slot.pid });
    worker.on('message', (m: unknown) => {
      if (!isMessage(m)) return;
      const msg = m as Up;
      if (msg.type === 'strata:ready') {
        if (slot.worker !== worker) return;
        slot.ready = true;
        slot.everReady = true;
        log.info(`gateway process ${slot.index} listening (pid ${slot.pid})`, { process: slot.index, pid: slot.pid, url: msg.url });
        if (!announced && !stopping && slots.every((s) => s.ready)) {
          announced = true;
          const where = msg.discard ? `DISCARDING rows (STRATA_BENCH_DISCARD, benchmark only; catalog in ${msg.target})` : `writing to ${msg.target}`;
          out(`strata serve: region ${o.region}, listening on ${msg.url}, ${where} (${n} gateway processes, pids ${slots.map((s) => s.pid).join(' ')})`);
        }
      } else if (msg.type === 'strata:failed') {
        slot.failure = msg.message;
      } else if (msg.type === 'strata:registry') {
        collector.reply(worker.id, msg);
      } else if (msg.type === 'strata:metrics') {
        const answer = (reply: Down) => worker.isConnected() && worker.send(reply, undefined, {}, () => {});
        aggregate().then(
          (text) => answer({ type: 'strata:metrics', id: msg.id, text }),
          (err: unknown) => answer({ type: 'strata:metrics', id: msg.id, error: errorText(err) }),
        );
      }
    });
    worker.on('exit', (code: number | null, signal: string | null) => exited(slot, worker, code, signal));
  };

  const exited = (slot: Slot, worker: Worker, code: number | null, signal: string | null) => {
    collector.drop(worker.id);
    if (slot.worker !== worker) return;
    const wasReady = slot.ready;
    slot.worker = null;
    slot.ready = false;
    const how = signal ? `signal ${signal}` : `exit code ${code}`;
    const fields = { process: slot.index, pid: slot.pid, code, signal };
    if (stopping) {
      log.info(`gateway process ${slot.index} (pid ${slot.pid}) exited (${how})`, fields);
      if (wasReady && !forced && (code !== 0 || signal)) stopFailures.push(`gateway process ${slot.index} (pid ${slot.pid}) stopped with ${how}`);
      if (slots.every((s) => !s.worker)) finish();
      return;
    }
    if (!announced && !slot.everReady) {
      startupError = `gateway process ${slot.index} (pid ${slot.pid}) failed to start (${how})${slot.failure ? `: ${slot.failure}` : ''}`;
      log.error(`${startupError}; stopping the others`, { ...fields, error: slot.failure });
      return stopAll();
    }
    const lived = Date.now() - slot.startedAt;
    slot.quickExits = lived >= STABLE_MS ? 1 : slot.quickExits + 1;
    const delay = Math.min(RESTART_MAX_MS, RESTART_MIN_MS * 2 ** (slot.quickExits - 1));
    restarts.inc({ process: String(slot.index) });
    const what = code === 0 && !signal ? `exited (${how}) while not shutting down` : `died (${how})`;
    const msg =
      slot.quickExits > 1
        ? `gateway process ${slot.index} (pid ${slot.pid}) ${what} ${Math.round(lived / 1000)} s after it started, ${slot.quickExits} times in a row: crash loop, backing off ${delay / 1000} s before the next replacement${slot.failure ? ` (${slot.failure})` : ''}`
        : `gateway process ${slot.index} (pid ${slot.pid}) ${what}; starting a replacement in ${delay / 1000} s (it replays process ${slot.index}'s spool)${slot.failure ? ` (${slot.failure})` : ''}`;
    log[code === 0 && !signal ? 'warn' : 'error'](msg, { ...fields, restartInMs: delay, exitsInARow: slot.quickExits, livedMs: lived });
    slot.restartTimer = setTimeout(() => {
      slot.restartTimer = null;
      if (!stopping) fork(slot);
    }, delay);
  };

  const stopAll = () => {
    stopping = true;
    for (const s of slots) {
      if (s.restartTimer) clearTimeout(s.restartTimer);
      s.restartTimer = null;
      s.worker?.process.kill('SIGTERM');
    }
    if (slots.every((s) => !s.worker)) finish();
  };

  const onSignal = (sig: NodeJS.Signals) => {
    if (!stopping) {
      log.info(`${sig} received; stopping ${slots.filter((s) => s.worker).length} gateway processes (each flushes its batches, spooling what cannot be committed; send it again to kill them at once)`, { signal: sig });
      return stopAll();
    }
    if (forced) return;
    forced = sig;
    log.warn(`second ${sig}: killing the gateway processes now (what they acknowledged is committed or in their spools)`, { signal: sig });
    for (const s of slots) s.worker?.process.kill('SIGKILL');
  };
  // SIGHUP: every process reads the TLS files again (serve.ts reloadTlsOnSighup).
  const onHangup = () => {
    log.info('SIGHUP received; the gateway processes read their TLS files again', { processes: slots.filter((s) => s.worker).length });
    for (const s of slots) s.worker?.process.kill('SIGHUP');
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  if (config.tlsCert) process.on('SIGHUP', onHangup);
  for (const s of slots) fork(s);

  return finished.then(() => {
    process.off('SIGTERM', onSignal);
    process.off('SIGINT', onSignal);
    process.off('SIGHUP', onHangup);
    if (startupError) throw new StrataError('gateway_start', startupError);
    if (forced) throw new StrataError('gateway_killed', `gateway processes killed by a second ${forced}`, { exitCode: 128 + (NUMBERS[forced] ?? 15) });
    if (stopFailures.length) throw new StrataError('gateway_stop', stopFailures.join('; '));
    log.info(`all ${n} gateway processes stopped`);
  });
}
