// Several groups of collectors ("streams") against one gateway at once, each with its own facility,
// request bodies, pace and answer counts — for benchmarks that compare one facility's acks with and
// without another's load. Unlike load.ts a stream counts every status it is answered (a 429 is a
// result here, not just a retry) and keeps the ack latency of each 204 on its own.
import { monitorEventLoopDelay } from 'node:perf_hooks';
import type { Batch, Precision } from './workload.ts';

export interface Stream {
  name: string;
  token: string;
  /** Prebuilt request bodies, sent round robin. */
  bodies: Batch[];
  gzip: boolean;
  precision: Precision;
  /** Collectors (concurrent requests at most). */
  collectors: number;
  /** Open loop: requests per second over the whole stream, on a fixed schedule; unset: closed loop (each collector sends again once answered). */
  requestsPerSecond?: number | undefined;
  /** After a 429/503: wait its Retry-After before the collector's next request (Telegraf), or send again at once. */
  honourRetryAfter: boolean;
}

export interface StreamResult {
  name: string;
  requests: number;
  /** Answers by status (`error` when the request failed without one). */
  statuses: Record<string, number>;
  /** Rows (metrics) of the requests answered 204. */
  ackedRows: number;
  ackedRowsPerSecond: number;
  /** Latency of the requests answered 204, ms. */
  ack: { p50: number; p99: number; p999: number; max: number; count: number };
  /** Open loop only: requests that left later than scheduled (more than 5 ms) because the stream's collectors were all busy. */
  late: number;
  /** The first few errors (status and message), for the report. */
  samples: string[];
}

export interface StreamsRun {
  seconds: number;
  streams: StreamResult[];
  /** CPU the load generator (this process) used meanwhile, in cores (CPU seconds ÷ wall seconds). */
  generatorCores: number;
  /** Event-loop delay of the load generator, ms: latency it may add to what it measures. */
  generatorLoopDelay: { p50: number; p99: number; max: number };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** A keep-alive connection the gateway closed as idle just as the client reused it: nothing was sent on it. */
const idleClosed = (err: unknown) => (err as { cause?: { code?: string } })?.cause?.code === 'UND_ERR_SOCKET';

/** One request of stream `s` (resent, up to twice, on a keep-alive connection the gateway had just closed as idle). */
export async function post(url: string, s: Stream, b: Batch): Promise<{ status: number | 'error'; retryAfter: number; text: string }> {
  for (let attempt = 1; ; attempt++) {
    try {
      const res = await fetch(`${url}/api/v2/write?precision=${s.precision}`, {
        method: 'POST',
        body: b.body as BodyInit,
        headers: { Authorization: `Token ${s.token}`, ...(s.gzip ? { 'Content-Encoding': 'gzip' } : {}) },
      });
      const text = res.status === 204 ? '' : await res.text();
      if (res.status === 204) await res.arrayBuffer();
      return { status: res.status, retryAfter: Number(res.headers.get('retry-after') ?? 1), text };
    } catch (err) {
      if (idleClosed(err) && attempt < 3) continue;
      const e = err as { message: string; cause?: { code?: string; message?: string } };
      return { status: 'error', retryAfter: 0, text: `${e.message}${e.cause ? `: ${e.cause.code ?? ''} ${e.cause.message ?? ''}` : ''}` };
    }
  }
}

export function quantiles(ms: number[]): StreamResult['ack'] {
  const sorted = [...ms].sort((a, b) => a - b);
  const q = (p: number) => +(sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] ?? 0).toFixed(1);
  return { p50: q(0.5), p99: q(0.99), p999: q(0.999), max: +(sorted.at(-1) ?? 0).toFixed(1), count: sorted.length };
}

/** Runs every stream for `seconds` (requests in flight then are awaited, and counted). */
export async function runStreams(url: string, streams: Stream[], seconds: number): Promise<StreamsRun> {
  const loop = monitorEventLoopDelay({ resolution: 10 });
  loop.enable();
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const end = t0 + seconds * 1000;
  const results = await Promise.all(
    streams.map(async (s) => {
      const statuses: Record<string, number> = {};
      const latencies: number[] = [];
      const samples: string[] = [];
      let requests = 0;
      let ackedRows = 0;
      let late = 0;
      let next = 0;
      const every = s.requestsPerSecond ? 1000 / s.requestsPerSecond : 0;
      await Promise.all(
        Array.from({ length: s.collectors }, async (_, c) => {
          for (let k = 0; ; k++) {
            if (every) {
              // Collector c sends the stream's requests c, c + collectors, c + 2·collectors, … on schedule.
              // No catching up after the end: a stream that falls behind sends fewer requests (counted late).
              const due = t0 + (c + k * s.collectors) * every;
              if (due >= end || performance.now() >= end) return;
              const wait = due - performance.now();
              if (wait > 0) await sleep(wait);
              else if (wait < -5) late++;
            } else if (performance.now() >= end) return;
            const b = s.bodies[next++ % s.bodies.length]!;
            requests++;
            const t = performance.now();
            const r = await post(url, s, b);
            statuses[r.status] = (statuses[r.status] ?? 0) + 1;
            if (r.status === 204) {
              latencies.push(performance.now() - t);
              ackedRows += b.rows;
              continue;
            }
            if (samples.length < 5) samples.push(`${r.status}: ${r.text.slice(0, 300)}`);
            if ((r.status === 429 || r.status === 503) && s.honourRetryAfter) await sleep(Math.min(r.retryAfter, 30) * 1000);
            else if (r.status === 'error') await sleep(50);
          }
        }),
      );
      const wall = (performance.now() - t0) / 1000;
      return { name: s.name, requests, statuses, ackedRows, ackedRowsPerSecond: Math.round(ackedRows / wall), ack: quantiles(latencies), late, samples } satisfies StreamResult;
    }),
  );
  const wall = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  loop.disable();
  const ms = (ns: number) => +(ns / 1e6).toFixed(1);
  return {
    seconds: +wall.toFixed(1),
    streams: results,
    generatorCores: +((cpu.user + cpu.system) / 1e6 / wall).toFixed(2),
    generatorLoopDelay: { p50: ms(loop.percentile(50)), p99: ms(loop.percentile(99)), max: ms(loop.max) },
  };
}
