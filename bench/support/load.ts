// Drives the gateway with concurrent keep-alive collectors until a row count or a duration, shows
// progress, and measures what the database committed (not what the client sent) — or, without a
// `count` (a gateway that discards its rows), what the gateway acknowledged.
import { fieldsOf, makeBatch, precisionOf, tagSets, type Batch, type Precision, type Workload } from './workload.ts';

export interface LoadOptions {
  url: string;
  /** Token of each facility. */
  tokens: string[];
  workload: Workload;
  clients: number;
  rowsTarget?: number | undefined;
  durationS?: number | undefined;
  intervalS: number;
  /**
   * Rows in strata.metrics now. Without it (the gateway discards rows: STRATA_BENCH_DISCARD) the
   * acknowledged rows are what is measured, and nothing can be checked for loss.
   */
  count?: () => Promise<number>;
  log(line: string): void;
  /** The gateway's CPU seconds so far, when it runs in its own process. */
  cpu?: () => number;
  /** Open loop: offer this many metrics/s on a fixed schedule (at most `clients` requests in flight). */
  rate?: number | undefined;
  /**
   * Build this many request bodies (rounded up to whole rounds of every facility) before the measured
   * phase and send them round robin, so the generator's own CPU (building and gzipping bodies) does
   * not compete with the gateway on a small machine; timestamps then repeat after that many batches.
   */
  prebuilt?: number | undefined;
  /**
   * Called once the warm-up (every series created) is done, before the measured phase: where the
   * harness reads the WAL position, so the one-time cost of creating the series is not counted per row.
   */
  measuring?: () => Promise<void>;
}

export interface LoadResult {
  /** What rowsPerSecond and intervals count: rows the database committed, or rows the gateway acknowledged. */
  counted: 'committed' | 'acknowledged';
  sentRows: number;
  ackedRows: number;
  /** 0 when counted = acknowledged (nothing reaches the database). */
  committedRows: number;
  lostRows: number;
  rowsPerSecond: number;
  seconds: number;
  ack: { p50: number; p99: number; p999: number };
  retried: number;
  failed: number;
  /** Open loop only: batches that left later than scheduled because every collector was busy. */
  late: number;
  /** Counted (committed or acknowledged) rows/s in each interval. */
  intervals: number[];
  gatewayCpuSeconds: number | null;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * A connection the gateway closed as idle just as the client used it, so the request was never read:
 * a keep-alive connection past its idle time (UND_ERR_SOCKET), or a spare connection fetch opened
 * and left without a byte for longer than the headers timeout, which the gateway closes
 * (`idle_first`; the client then sees ECONNRESET).
 */
const idleClosed = (err: unknown) => ['UND_ERR_SOCKET', 'ECONNRESET'].includes((err as { cause?: { code?: string } })?.cause?.code ?? '');

async function send(url: string, token: string, b: Batch, gzip: boolean, precision: Precision): Promise<{ status: number; retryAfter: number }> {
  for (let attempt = 1; ; attempt++) {
    try {
      const res = await fetch(`${url}/api/v2/write?precision=${precision}`, {
        method: 'POST',
        body: b.body as BodyInit,
        headers: { Authorization: `Token ${token}`, ...(gzip ? { 'Content-Encoding': 'gzip' } : {}) },
      });
      await res.arrayBuffer();
      return { status: res.status, retryAfter: Number(res.headers.get('retry-after') ?? 1) };
    } catch (err) {
      if (!idleClosed(err) || attempt === 3) throw err;
    }
  }
}

export async function drive(o: LoadOptions): Promise<LoadResult> {
  const F = o.tokens.length;
  const start = Date.UTC(2026, 10, 21);
  // Built before the warm-up, so no keep-alive connection idles out meanwhile.
  const pool: Batch[] = [];
  for (let g = F; g < F + Math.ceil((o.prebuilt ?? 0) / F) * F; g++) pool.push(makeBatch(o.workload, g % F, Math.floor(g / F), start));
  // Warm-up (not measured): one line per tag set and facility creates every series, at tick 0.
  const precision = precisionOf(o.workload);
  const warm = { ...o.workload, linesPerBatch: tagSets(o.workload) };
  await Promise.all(o.tokens.map(async (t, f) => {
    const r = await send(o.url, t, makeBatch(warm, f, 0, start), o.workload.gzip, precision);
    if (r.status !== 204) throw new Error(`warm-up batch of facility ${f} answered ${r.status}`);
  }));
  await o.measuring?.();
  let sent = 0;
  let acked = 0;
  const counted = o.count ? 'committed' : 'acknowledged';
  const count = o.count ?? (async () => acked);
  const base = await count();
  const cpu0 = o.cpu?.() ?? null;
  let next = F; // batch number g → facility g % F, round ⌊g / F⌋
  let retried = 0;
  let failed = 0;
  const latencies: number[] = [];
  const t0 = performance.now();
  const done = () => (o.rowsTarget !== undefined ? sent >= o.rowsTarget : (performance.now() - t0) / 1000 >= o.durationS!);
  const intervals: number[] = [];
  let last = { at: t0, committed: base };
  let stopProgress = false;
  const progress = (async () => {
    while (!stopProgress) {
      await sleep(o.intervalS * 1000);
      const now = performance.now();
      const committed = await count();
      const rate = Math.round((committed - last.committed) / ((now - last.at) / 1000));
      intervals.push(rate);
      last = { at: now, committed };
      const at = `[${Math.round((now - t0) / 1000)} s] sent ${sent.toLocaleString()} rows, acked ${acked.toLocaleString()}`;
      o.log(o.count ? `${at}, committed ${(committed - base).toLocaleString()} (${rate.toLocaleString()} rows/s)` : `${at} (${rate.toLocaleString()} rows/s acknowledged; rows discarded)`);
    }
  })();
  /** Sends batch g until it is acknowledged (429/503 are retried after Retry-After, as Telegraf does). */
  const deliver = async (g: number) => {
    const batch = pool.length > 0 ? pool[(g - F) % pool.length]! : makeBatch(o.workload, g % F, Math.floor(g / F), start);
    sent += batch.rows;
    const t = performance.now();
    for (;;) {
      const r = await send(o.url, o.tokens[g % F]!, batch, o.workload.gzip, precision);
      if (r.status === 204) {
        latencies.push(performance.now() - t);
        acked += batch.rows;
        return;
      }
      if (r.status === 429 || r.status === 503) {
        retried++;
        await sleep(r.retryAfter * 1000);
        continue;
      }
      failed++;
      o.log(`batch ${g} answered ${r.status}; not retried`);
      return;
    }
  };
  let late = 0;
  if (o.rate) {
    // Open loop: batch k leaves at t0 + k·(rows per batch ÷ rate); latency includes any retries.
    const every = (o.workload.linesPerBatch * fieldsOf(o.workload) * 1000) / o.rate;
    const inFlight = new Set<Promise<void>>();
    for (let k = 0; !done(); k++) {
      const due = t0 + k * every;
      if (performance.now() < due) await sleep(due - performance.now());
      if (inFlight.size >= o.clients) {
        late++;
        await Promise.race(inFlight);
      }
      const p: Promise<void> = deliver(next++).finally(() => inFlight.delete(p));
      inFlight.add(p);
    }
    await Promise.all(inFlight);
  } else {
    await Promise.all(
      Array.from({ length: o.clients }, async () => {
        while (!done()) await deliver(next++);
      }),
    );
  }
  // Every acknowledged row is durable; wait for the last ones to be visible, then count.
  let committed = await count();
  for (let i = 0; i < 600 && committed - base < acked; i++) {
    await sleep(100);
    committed = await count();
  }
  const seconds = (performance.now() - t0) / 1000;
  stopProgress = true;
  await progress;
  latencies.sort((a, b) => a - b);
  const q = (p: number) => +(latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))] ?? 0).toFixed(1);
  const countedRows = committed - base;
  return {
    counted,
    sentRows: sent,
    ackedRows: acked,
    committedRows: o.count ? countedRows : 0,
    lostRows: o.count ? Math.max(0, acked - countedRows) : 0,
    rowsPerSecond: Math.round(countedRows / seconds),
    seconds: +seconds.toFixed(1),
    ack: { p50: q(0.5), p99: q(0.99), p999: q(0.999) },
    retried,
    failed,
    late,
    intervals,
    gatewayCpuSeconds: cpu0 === null ? null : o.cpu!() - cpu0,
  };
}
