// Failover on the production write path (test/support/standby.ts: primary + synchronous streaming
// standby, HAProxy, PgBouncer in transaction pooling), with a collector streaming writes through a
// gateway the whole time:
//   (a) the primary stops; HAProxy's backup — still a standby, in recovery — takes the endpoint until
//       it is promoted;
//   (b) the primary stays up read-only (default_transaction_read_only, connections kept) until the
//       standby is promoted and HAProxy is moved to it.
// Either way every acknowledged row ends up on the new primary exactly once, the gateway spools
// while no server accepts writes (no flapping, a few log lines), /ready says why it is not ready,
// and the same gateway writes to the new primary without a restart. The gap (fault → first commit
// on the new primary) is printed.
import { afterEach, describe, expect, it } from 'vitest';
import { openDb } from '../../src/db/open.ts';
import type { Db } from '../../src/db/port.ts';
import type { Gateway } from '../../src/ingest/gateway.ts';
import { createLogger } from '../../src/log.ts';
import { facility, gateway, plainSchema, post } from '../support/gateway.ts';
import { startFailoverStack, type FailoverStack } from '../support/standby.ts';
import { sleep, until } from '../support/wait.ts';


const SERIES = 4;
const ROWS = 5;
const T0 = 1_750_000_000_000;

/** Request n: ROWS rows for each of SERIES series, at times no other request uses; each value unique. */
function request(run: string, n: number): string {
  const lines: string[] = [];
  for (let s = 0; s < SERIES; s++) for (let i = 0; i < ROWS; i++) lines.push(`fo,run=${run},s=${s} v=${n * 100 + s * 10 + i} ${T0 + n * ROWS + i}`);
  return lines.join('\n');
}

/** Collectors posting requests back to back until stopped; counts what was acknowledged. */
class Collector {
  acked = 0;
  sent = 0;
  refused: { n: number; status: number; message: unknown }[] = [];
  private stopped = false;
  private loops: Promise<void>[] = [];
  private next = 1; // request 0 is the warm-up
  constructor(
    private readonly base: string,
    private readonly token: string,
    private readonly run: string,
  ) {}

  start(collectors = 3): void {
    this.loops = Array.from({ length: collectors }, async () => {
      while (!this.stopped) {
        const n = this.next++;
        this.sent++;
        const r = await post(this.base, '/api/v2/write?precision=ms', request(this.run, n), { Authorization: `Token ${this.token}` });
        if (r.status === 204) this.acked++;
        else this.refused.push({ n, status: r.status, message: r.body.message });
        await sleep(10);
      }
    });
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await Promise.all(this.loops);
  }
}

interface Sample {
  start: number;
  end: number;
  status: number;
  reason: string | undefined;
}

/** Polls /ready back to back, keeping every answer with when it was asked and answered. */
function watchReady(base: string): { samples: Sample[]; stop(): Promise<void> } {
  const samples: Sample[] = [];
  let stopped = false;
  const loop = (async () => {
    while (!stopped) {
      const start = Date.now();
      try {
        const res = await fetch(`${base}/ready`);
        const body = (await res.json()) as { message?: string };
        samples.push({ start, end: Date.now(), status: res.status, reason: body.message });
      } catch {
        /* the gateway is stopping */
      }
      await sleep(50);
    }
  })();
  return {
    samples,
    async stop() {
      stopped = true;
      await loop;
    },
  };
}

async function ready(base: string): Promise<{ status: number; reason?: string }> {
  const res = await fetch(`${base}/ready`);
  const body = (await res.json()) as { message?: string };
  return { status: res.status, reason: body.message };
}

const metric = async (g: Gateway, name: string) => ((await g.metrics.registry.getSingleMetric(name)?.get())?.values ?? []).reduce((n, v) => n + v.value, 0);

/** Lines that report the database going down or coming back (today's texts, and those of a gateway that flapped). */
const STATE_CHANGE = /^database (unavailable|still unavailable|accepts writes again|reachable again|unreachable)|^spool replay stopped/;

interface Env {
  stack: FailoverStack;
  db: Db;
  g: Gateway;
  token: string;
  logs: { time: number; level: string; msg: string; reason?: string }[];
}

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => {});
});

async function setUp(): Promise<Env> {
  const stack = await startFailoverStack();
  cleanups.push(() => stack.destroy());
  await stack.query('primary', 'CREATE DATABASE strata_failover');
  const admin = await openDb(stack.nodeUrl('primary', 'strata_failover'), { max: 1 });
  let token: string;
  try {
    await plainSchema(admin);
    token = (await facility(admin, 'foundry')).token;
  } finally {
    await admin.close();
  }
  const logs: Env['logs'] = [];
  const log = createLogger('info', (line) => {
    const r = JSON.parse(line) as { level: string; msg: string; reason?: string };
    logs.push({ time: Date.now(), level: r.level, msg: r.msg, reason: r.reason });
  });
  const db = await openDb(stack.bouncerUrl('strata_failover'), { max: 6, queryTimeoutMs: 2_000 });
  cleanups.push(() => db.close());
  const g = await gateway(db, { attemptTimeoutMs: 1_000, maxAttempts: 2, replayIntervalMs: 200 }, log);
  cleanups.push(() => g.stop());
  return { stack, db, g, token, logs };
}

/** On the new primary: every acknowledged row once per series, no (series, time) twice. */
async function expectExactlyOnce(stack: FailoverStack, run: string, requests: number): Promise<void> {
  const rows = await stack.query<{ s: string; n: number; distinct_times: number }>(
    'standby',
    `SELECT s.tags->>'s' AS s, count(*)::int AS n, count(DISTINCT m.time)::int AS distinct_times
       FROM strata.metrics m JOIN strata.series s ON s.id = m.series_id AND s.facility_id = m.facility_id
      WHERE s.measurement = 'fo' AND s.tags->>'run' = $1 GROUP BY 1 ORDER BY 1`,
    [run],
    'strata_failover',
  );
  expect(rows).toEqual(Array.from({ length: SERIES }, (_, s) => ({ s: String(s), n: requests * ROWS, distinct_times: requests * ROWS })));
}

/** First commit on the promoted standby: the earliest ledger row that began after the promotion started. */
async function firstCommitAfter(stack: FailoverStack, t: number): Promise<number> {
  const [r] = await stack.query<{ at: Date | null }>('standby', 'SELECT min(committed_at) AS at FROM strata.ingest_ledger WHERE committed_at >= to_timestamp($1::float8 / 1000)', [t], 'strata_failover');
  expect(r!.at).not.toBeNull();
  return r!.at!.getTime();
}

/**
 * The common tail of both scenarios: once the gateway has shown it treats the server as down (and
 * had time to flap if it were going to), promote, move the endpoint if asked, and check everything.
 */
async function failOver(env: Env, run: string, fault: number, notWritable: RegExp, move: boolean, watch: ReturnType<typeof watchReady>, collector: Collector) {
  const { stack, g, logs } = env;
  // Not ready, and saying why, while no server behind the endpoint accepts writes.
  await until('/ready to report the server does not accept writes', async () => {
    const r = await ready(g.url);
    return r.status === 503 && notWritable.test(r.reason ?? '');
  }, 15_000);
  const notReadyAt = Date.now();
  // Batches spool meanwhile, and the replayer probes a while: enough to flap if it would.
  const probes = g.replayer.probes;
  await until('batches to be spooled', async () => (await metric(g, 'strata_ingest_rows_spooled_total')) > 0);
  await until('the replayer to probe a few times', () => g.replayer.probes >= probes + 5);
  expect(g.writer.down).toBe(true);
  const spooledBefore = await metric(g, 'strata_ingest_rows_spooled_total');

  if (move) expect(await stack.routedTo()).toBe('primary'); // (b): the read-only primary kept the endpoint and its connections
  await stack.waitForStandby().catch(() => {}); // (a): the primary is gone, its WAL is on the standby already
  const promoteAt = Date.now();
  await stack.promoteStandby();
  if (move) await stack.routeTo('standby');
  await until('/ready after the failover', async () => (await ready(g.url)).status === 200);
  const readyAt = Date.now();
  await until('the gateway to replay its spool on the new primary', () => g.spool.empty && !g.writer.down);
  // The same gateway keeps writing to the new primary, straight to the database.
  const acked = collector.acked;
  const committed = await metric(g, 'strata_ingest_rows_committed_total');
  await until('more writes after the failover', () => collector.acked >= acked + 20);
  await collector.stop();
  await watch.stop();
  expect(await metric(g, 'strata_ingest_rows_committed_total')).toBeGreaterThan(committed);
  await until('the spool to be empty', () => g.spool.empty && !g.writer.down);

  expect(collector.refused).toEqual([]);
  expect(spooledBefore).toBeGreaterThan(0);
  await expectExactlyOnce(stack, run, 1 + collector.acked);

  // /ready was truthful: never ready between the fault and the promotion, ready after.
  const during = watch.samples.filter((s) => s.start > notReadyAt && s.end < promoteAt);
  expect(during.length).toBeGreaterThan(0);
  expect(during.filter((s) => s.status !== 503)).toEqual([]);
  expect(during.every((s) => notWritable.test(s.reason ?? '') || /unreachable/.test(s.reason ?? ''))).toBe(true);
  expect(watch.samples.filter((s) => s.start > readyAt).every((s) => s.status === 200)).toBe(true);

  // No flapping: while no server accepted writes the gateway did not resume, and said so in a line or two.
  const outage = logs.filter((l) => l.time >= fault && l.time < promoteAt && STATE_CHANGE.test(l.msg));
  expect(outage.filter((l) => l.msg.startsWith('database accepts writes again'))).toEqual([]);
  expect(outage.length).toBeGreaterThanOrEqual(1);
  expect(outage.length).toBeLessThanOrEqual(3);
  expect(logs.filter((l) => STATE_CHANGE.test(l.msg)).length).toBeLessThanOrEqual(6);
  expect(logs.filter((l) => l.msg === 'spool replay stopped; will retry')).toEqual([]);

  const first = await firstCommitAfter(stack, promoteAt);
  const gap = { faultToFirstCommitMs: first - fault, promotionToFirstCommitMs: first - promoteAt, faultToNotReadyMs: notReadyAt - fault, promotionToReadyMs: readyAt - promoteAt };
  const changes = logs.filter((l) => STATE_CHANGE.test(l.msg)).map((l) => `+${l.time - fault} ms ${l.level} ${l.msg}${l.reason ? ` (${l.reason})` : ''}`);
  console.log(`failover gap (${run}): ${JSON.stringify(gap)}; ${collector.acked + 1} requests acknowledged, ${spooledBefore} rows spooled during the outage\n  ${changes.join('\n  ')}`);
  return gap;
}

describe('failover through HAProxy and PgBouncer', () => {
  it('(a) the primary stops, a standby holds the endpoint until promoted: every acknowledged row once, no restart', async () => {
    const env = await setUp();
    const { stack, g, token } = env;
    expect((await post(g.url, '/api/v2/write?precision=ms', request('stop', 0), { Authorization: `Token ${token}` })).status).toBe(204);
    const watch = watchReady(g.url);
    const collector = new Collector(g.url, token, 'stop');
    collector.start();
    try {
      await until('writes to flow', () => collector.acked >= 20);
      const fault = Date.now();
      await stack.stopPrimary('fast');
      await until('HAProxy to hand the endpoint to the standby', async () => (await stack.routedTo()) === 'standby');
      const gap = await failOver(env, 'stop', fault, /in recovery/, false, watch, collector);
      expect(gap.promotionToFirstCommitMs).toBeLessThan(15_000);
    } finally {
      await collector.stop();
      await watch.stop();
    }
  }, 120_000);

  it('(b) the primary stays up read-only with its connections: the gateway spools, says so, and resumes on the promoted standby', async () => {
    const env = await setUp();
    const { stack, g, token } = env;
    expect((await post(g.url, '/api/v2/write?precision=ms', request('ro', 0), { Authorization: `Token ${token}` })).status).toBe(204);
    const watch = watchReady(g.url);
    const collector = new Collector(g.url, token, 'ro');
    collector.start();
    try {
      await until('writes to flow', () => collector.acked >= 20);
      const fault = Date.now();
      await stack.setReadOnly(true);
      const gap = await failOver(env, 'ro', fault, /read-only/, true, watch, collector);
      expect(gap.promotionToFirstCommitMs).toBeLessThan(15_000);
    } finally {
      await collector.stop();
      await watch.stop();
    }
  }, 120_000);
});
