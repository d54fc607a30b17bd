// A database that answers but refuses writes (here: ALTER DATABASE ... SET
// default_transaction_read_only = on, as a primary turned read-only looks to new sessions) is down for
// the gateway: the probe says so, batches spool, the replayer does not resume (no flapping, one log
// line), /ready answers 503 with the reason; once the database accepts writes the spool is replayed.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pg from 'pg';
import { openDb } from '../../src/db/open.ts';
import type { Db } from '../../src/db/port.ts';
import { DOWN, probeWritable } from '../../src/ingest/classify.ts';
import { createLogger } from '../../src/log.ts';
import { cluster, createDatabase, type TestDatabase } from '../support/databases.ts';
import { count, facility, gateway, plainSchema, post } from '../support/gateway.ts';

let t: TestDatabase;
let token: string;

async function admin(sql: string, params: unknown[] = []): Promise<void> {
  const c = new pg.Client({ connectionString: cluster().adminUrl() });
  await c.connect();
  try {
    await c.query(sql, params);
  } finally {
    await c.end();
  }
}

beforeAll(async () => {
  t = await createDatabase(cluster().adminUrl(), 'strata_ro');
  const db = await openDb(t.url, { max: 1 });
  try {
    await plainSchema(db);
    token = (await facility(db, 'kiln')).token;
    // The series exists before the database turns read-only (creating one is a write).
    const warm = await gateway(db);
    try {
      expect((await post(warm.url, '/api/v2/write?precision=s', 'kiln,zone=a t=0 1699999999\n', { Authorization: `Token ${token}` })).status).toBe(204);
    } finally {
      await warm.stop();
    }
  } finally {
    await db.close();
  }
  await admin(`ALTER DATABASE ${t.name} SET default_transaction_read_only = on`);
});

afterAll(async () => {
  await admin(`ALTER DATABASE ${t.name} RESET default_transaction_read_only`).catch(() => {});
  await t?.drop();
});

const STATE_CHANGES = /^database (unavailable|still unavailable|accepts writes again)/;

describe('a read-only database', () => {
  it('is down for the gateway: spooled, not ready, no flapping; replayed once it accepts writes', async () => {
    const logs: { level: string; msg: string; reason?: string }[] = [];
    const log = createLogger('info', (line) => logs.push(JSON.parse(line) as { level: string; msg: string }));
    const db = await openDb(t.url, { max: 4, queryTimeoutMs: 2_000 });
    // Replay passes run only when the test calls tick().
    const g = await gateway(db, { attemptTimeoutMs: 1_000, maxAttempts: 3, replayIntervalMs: 3_600_000 }, log);
    try {
      expect(await probeWritable(db)).toEqual({ writable: false, reason: DOWN.readOnly });
      const r = await post(g.url, '/api/v2/write?precision=s', 'kiln,zone=a t=1 1700000000\nkiln,zone=a t=2 1700000001\n', { Authorization: `Token ${token}` });
      expect(r.status).toBe(204);
      expect(g.writer.down).toBe(true);
      expect(g.spool.empty).toBe(false);

      const ready = await fetch(`${g.url}/ready`);
      expect(ready.status).toBe(503);
      expect(((await ready.json()) as { message: string }).message).toBe(DOWN.readOnly);

      for (let i = 0; i < 5; i++) await g.replayer.tick();
      expect(g.writer.down).toBe(true);
      expect(g.spool.empty).toBe(false);
      expect(logs.filter((l) => STATE_CHANGES.test(l.msg)).map(({ level, msg, reason }) => ({ level, msg, reason }))).toEqual([
        { level: 'warn', msg: 'database unavailable; spooling batches until it accepts writes again', reason: DOWN.readOnly },
      ]);
      expect(logs.filter((l) => /replay stopped|reachable again/.test(l.msg))).toEqual([]);

      // Writable again: new sessions see it (the old ones keep the database's setting, so end them).
      await admin(`ALTER DATABASE ${t.name} RESET default_transaction_read_only`);
      await admin('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()', [t.name]);
      for (let i = 0; i < 20 && (g.writer.down || !g.spool.empty); i++) await g.replayer.tick();
      expect(g.writer.down).toBe(false);
      expect(g.spool.empty).toBe(true);
      expect(await count(db)).toBe(3);
      expect((await fetch(`${g.url}/ready`)).status).toBe(200);
      expect(logs.filter((l) => l.msg === 'database accepts writes again; replaying the spool')).toHaveLength(1);
    } finally {
      await g.stop();
      await db.close();
    }
  });
});
