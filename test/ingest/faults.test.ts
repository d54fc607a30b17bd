// Fault injection on a private PostgreSQL + PgBouncer: stop either mid-stream, lose a COMMIT's
// reply, fill the spool, kill -9 the gateway while it holds spooled data. After each, every
// acknowledged row is in the database exactly once.
import { spawn, type ChildProcess } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDb } from '../../src/db/open.ts';
import type { Db } from '../../src/db/port.ts';
import type { Gateway } from '../../src/ingest/gateway.ts';
import { Cluster, freePort } from '../support/cluster.ts';
import { createDatabase, type TestDatabase } from '../support/databases.ts';
import { facility, gateway, plainSchema, post, tempDir } from '../support/gateway.ts';
import { PgProxy } from '../support/pg-proxy.ts';
import { sleep, until } from '../support/wait.ts';

let c: Cluster;
let t: TestDatabase;
let admin: Db;
let fac: { id: number; token: string };

beforeAll(async () => {
  c = await Cluster.create();
  t = await createDatabase(c.adminUrl(), 'strata_faults');
  admin = await openDb(t.url, { max: 2 });
  await plainSchema(admin);
  fac = await facility(admin, 'forge');
}, 180_000);

afterAll(async () => {
  await admin?.close().catch(() => {});
  await t?.drop().catch(() => {});
  await c?.destroy();
});


/** Requests of `lines` rows each, tagged `run`; each row's value is unique, so repeats show up. */
function request(run: string, n: number, lines = 50): string {
  return Array.from({ length: lines }, (_, i) => `fault,run=${run} v=${n * 1000 + i} ${1_700_000_000_000 + n * 1000 + i}`).join('\n');
}

/** Streams `count` requests from each of `collectors`, calling `fault` partway; returns the acknowledged ones. */
async function stream(base: string, run: string, collectors: number, count: number, fault: () => Promise<void>) {
  const acked: number[] = [];
  const refused: { n: number; status: number }[] = [];
  let sent = 0;
  const faultDone = (async () => {
    while (sent < (collectors * count) / 3) await sleep(10);
    await fault();
  })();
  await Promise.all(
    Array.from({ length: collectors }, async (_, k) => {
      for (let i = 0; i < count; i++) {
        const n = k * count + i;
        sent++;
        const r = await post(base, '/api/v2/write?precision=ms', request(run, n), { Authorization: `Token ${fac.token}` });
        if (r.status === 204) acked.push(n);
        else refused.push({ n, status: r.status });
        await sleep(15);
      }
    }),
  );
  await faultDone;
  return { acked, refused };
}

/** Every acknowledged row exactly once, nothing of refused requests. */
async function expectExactlyOnce(run: string, acked: number[], lines = 50): Promise<void> {
  const r = await admin.query<{ v: number; n: number }>(
    `SELECT m.value AS v, count(*)::int AS n FROM strata.metrics m JOIN strata.series s ON s.id = m.series_id
      WHERE s.measurement = 'fault' AND s.tags->>'run' = $1 GROUP BY m.value`,
    [run],
  );
  const seen = new Map(r.rows.map((x) => [x.v, x.n]));
  const dupes = r.rows.filter((x) => x.n !== 1);
  expect(dupes).toEqual([]);
  const missing = acked.flatMap((n) => Array.from({ length: lines }, (_, i) => n * 1000 + i)).filter((v) => !seen.has(v));
  expect(missing).toEqual([]);
}

const metric = async (g: Gateway, name: string) => ((await g.metrics.registry.getSingleMetric(name)?.get())?.values ?? []).reduce((n, v) => n + v.value, 0);

describe('fault injection', () => {
  it('stopping PostgreSQL mid-stream: batches spool, replay when it is back, each acknowledged row once', async () => {
    const db = await openDb(c.bouncerUrl(t.name), { max: 6, queryTimeoutMs: 2_000 });
    // A retry budget (2 attempts of 500 ms) well inside the 3 s outage, so batches must be spooled.
    const g = await gateway(db, { attemptTimeoutMs: 500, maxAttempts: 2 });
    try {
      expect((await post(g.url, '/api/v2/write?precision=ms', request('pg', 999), { Authorization: `Token ${fac.token}` })).status).toBe(204);
      const { acked, refused } = await stream(g.url, 'pg', 3, 40, async () => {
        await c.stopPostgres('fast');
        await sleep(3_000);
        await c.startPostgres();
      });
      expect(refused).toEqual([]);
      expect(await metric(g, 'strata_ingest_rows_spooled_total')).toBeGreaterThan(0);
      await until('the spool to drain', async () => g.spool.empty && !g.writer.down);
      await expectExactlyOnce('pg', [999, ...acked]);
    } finally {
      await g.stop();
      await db.close();
    }
  });

  it('stopping PgBouncer mid-stream: the same guarantees', async () => {
    const db = await openDb(c.bouncerUrl(t.name), { max: 6, queryTimeoutMs: 2_000 });
    const g = await gateway(db, { attemptTimeoutMs: 2_000, maxAttempts: 3 });
    try {
      expect((await post(g.url, '/api/v2/write?precision=ms', request('bouncer', 999), { Authorization: `Token ${fac.token}` })).status).toBe(204);
      const { acked, refused } = await stream(g.url, 'bouncer', 3, 40, async () => {
        await c.stopBouncer();
        await sleep(1_500);
        await c.startBouncer();
      });
      expect(refused).toEqual([]);
      await until('the spool to drain', async () => g.spool.empty && !g.writer.down);
      await expectExactlyOnce('bouncer', [999, ...acked]);
    } finally {
      await g.stop();
      await db.close();
    }
  });

  it('a lost COMMIT reply is retried, found in the ledger, and not written twice', async () => {
    const proxy = await PgProxy.start(c.bouncerPort);
    const db = await openDb(proxy.url(t.name), { max: 4, queryTimeoutMs: 2_000 });
    const g = await gateway(db, { attemptTimeoutMs: 2_000 });
    try {
      expect((await post(g.url, '/api/v2/write?precision=ms', request('commit', 1), { Authorization: `Token ${fac.token}` })).status).toBe(204);
      const lost = proxy.loseNextCommitReply();
      const r = await post(g.url, '/api/v2/write?precision=ms', request('commit', 2), { Authorization: `Token ${fac.token}` });
      await lost;
      expect(r.status).toBe(204);
      expect(await metric(g, 'strata_ingest_duplicates_avoided_total')).toBe(1);
      expect(await metric(g, 'strata_ingest_retries_total')).toBeGreaterThanOrEqual(1);
      await expectExactlyOnce('commit', [1, 2]);
    } finally {
      await g.stop();
      await db.close();
      await proxy.close();
    }
  });

  it('answers 503 with Retry-After when the database is unreachable and the spool is full; nothing is written', async () => {
    const proxy = await PgProxy.start(c.bouncerPort);
    const db = await openDb(proxy.url(t.name), { max: 4, queryTimeoutMs: 2_000 });
    const g = await gateway(db, { attemptTimeoutMs: 1_000, maxAttempts: 2, spoolMaxBytes: 1_000 });
    try {
      expect((await post(g.url, '/api/v2/write?precision=ms', request('full', 1), { Authorization: `Token ${fac.token}` })).status).toBe(204);
      proxy.setDown(true);
      const r = await post(g.url, '/api/v2/write?precision=ms', request('full', 2), { Authorization: `Token ${fac.token}` });
      expect(r.status).toBe(503);
      expect(r.headers.get('retry-after')).toBeTruthy();
      expect(r.body.message).toBe('the database is unreachable and the spool is full; retry later');
      const ready = await fetch(`${g.url}/ready`);
      expect(ready.status).toBe(503);
      proxy.setDown(false);
      await until('the gateway to see the database', async () => (await fetch(`${g.url}/ready`)).status === 200);
      await expectExactlyOnce('full', [1]);
      const n = await admin.query(`SELECT 1 FROM strata.metrics WHERE value >= 2000 AND value < 3000 AND series_id IN (SELECT id FROM strata.series WHERE tags->>'run' = 'full')`);
      expect(n.rows).toEqual([]);
    } finally {
      await g.stop();
      await db.close();
      await proxy.close();
    }
  });

  it('a gateway started while the database is unreachable listens, answers 503, and works once it is back', async () => {
    const proxy = await PgProxy.start(c.bouncerPort);
    proxy.setDown(true);
    const db = await openDb(proxy.url(t.name), { max: 4, queryTimeoutMs: 2_000 });
    const g = await gateway(db, { attemptTimeoutMs: 1_000, maxAttempts: 2 });
    try {
      const early = await post(g.url, '/api/v2/write?precision=ms', request('late', 1), { Authorization: `Token ${fac.token}` });
      expect(early.status).toBe(503);
      expect(early.body.message).toMatch(/cannot verify the token while the database is unreachable/);
      const ready = await fetch(`${g.url}/ready`);
      expect(ready.status).toBe(503);
      proxy.setDown(false);
      await until('the gateway to load its facilities', async () => (await fetch(`${g.url}/ready`)).status === 200);
      expect((await post(g.url, '/api/v2/write?precision=ms', request('late', 2), { Authorization: `Token ${fac.token}` })).status).toBe(204);
      await expectExactlyOnce('late', [2]);
    } finally {
      await g.stop();
      await db.close();
      await proxy.close();
    }
  });

  it('stopping while the database is unreachable spools the pending rows, answers them, and the next gateway replays them', async () => {
    const proxy = await PgProxy.start(c.bouncerPort);
    const db = await openDb(proxy.url(t.name), { max: 4, queryTimeoutMs: 1_000 });
    const spoolDir = tempDir();
    // 50-row batches or a long age: the 50-row warm-up flushes at once, the 10-row request is still
    // pending in its batcher when the gateway is stopped.
    const g = await gateway(db, { spoolDir, batchRows: 50, batchAgeMs: 60_000, attemptTimeoutMs: 500, maxAttempts: 2 });
    let stopped = false;
    try {
      expect((await post(g.url, '/api/v2/write?precision=ms', request('shutdown', 0), { Authorization: `Token ${fac.token}` })).status).toBe(204);
      const pending = post(g.url, '/api/v2/write?precision=ms', request('shutdown', 1, 10), { Authorization: `Token ${fac.token}` });
      await sleep(200);
      proxy.setDown(true);
      await g.stop();
      stopped = true;
      expect((await pending).status).toBe(204);
      expect(readdirSync(spoolDir).some((f) => f.endsWith('.spool'))).toBe(true);
    } finally {
      if (!stopped) await g.stop();
      await db.close();
    }
    proxy.setDown(false);
    const db2 = await openDb(proxy.url(t.name), { max: 4, queryTimeoutMs: 2_000 });
    const g2 = await gateway(db2, { spoolDir });
    try {
      await until('the next gateway to replay the spool', async () => g2.spool.empty);
      await expectExactlyOnce('shutdown', [0]);
      await expectExactlyOnce('shutdown', [1], 10);
    } finally {
      await g2.stop();
      await db2.close();
      await proxy.close();
    }
  });

  it('kill -9 of a gateway holding spooled data: the restarted gateway replays it exactly once', async () => {
    const spoolDir = tempDir();
    const port = await freePort();
    const base = `http://127.0.0.1:${port}`;
    const env = {
      ...process.env,
      STRATA_DATABASE_URL: c.bouncerUrl(t.name),
      STRATA_REGION: 'test-1',
      STRATA_LISTEN: `127.0.0.1:${port}`,
      STRATA_SPOOL_DIR: spoolDir,
      STRATA_BATCH_AGE_MS: '20',
      STRATA_LOG_LEVEL: 'warn',
      STRATA_GATEWAY_PROCESSES: '1', // one process, spooling at the top of spoolDir (processes.test.ts covers several)
    };
    const bin = join(import.meta.dirname, '../../bin/strata.js');
    const startChild = async (): Promise<ChildProcess> => {
      const child = spawn(process.execPath, [bin, 'serve'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
      let log = '';
      child.stderr!.on('data', (d: Buffer) => (log += d.toString()));
      await until('the gateway to listen', async () => (await fetch(`${base}/health`)).ok, 60_000).catch((err) => {
        throw new Error(`${(err as Error).message}\n${log}`);
      });
      return child;
    };
    let child = await startChild();
    try {
      expect((await post(base, '/api/v2/write?precision=ms', request('kill', 0), { Authorization: `Token ${fac.token}` })).status).toBe(204);
      await c.stopPostgres('fast');
      const acked = [0];
      for (let n = 1; n <= 20; n++) {
        const r = await post(base, '/api/v2/write?precision=ms', request('kill', n), { Authorization: `Token ${fac.token}` });
        expect(r.status).toBe(204);
        acked.push(n);
      }
      expect(readdirSync(spoolDir).some((f) => f.endsWith('.spool'))).toBe(true);
      child.kill('SIGKILL');
      await new Promise((r) => child.once('exit', r));
      await c.startPostgres();
      child = await startChild();
      await until('the restarted gateway to replay its spool', async () => !readdirSync(spoolDir).some((f) => f.endsWith('.spool')));
      await expectExactlyOnce('kill', acked);
      child.kill('SIGTERM');
      const code = await new Promise((r) => child.once('exit', (code) => r(code)));
      expect(code).toBe(0);
    } finally {
      child.kill('SIGKILL');
      await c.startPostgres().catch(() => {});
    }
  }, 180_000);
});
