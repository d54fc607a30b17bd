// The gateway writing into the real TimescaleDB hypertable (PGlite-TimescaleDB always, a TimescaleDB
// server when STRATA_TEST_TIMESCALE_URL is set): rows land in the right chunks, exactly once.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { migrate } from '../../src/db/migrate.ts';
import type { Db } from '../../src/db/port.ts';
import type { Gateway } from '../../src/ingest/gateway.ts';
import { timescaleTargets } from '../support/databases.ts';
import { facility, gateway, post, stored } from '../support/gateway.ts';

describe.each(timescaleTargets())('gateway into the hypertable on $name', (target) => {
  let db: Db;
  let close: () => Promise<void>;
  let gw: Gateway;
  let fac: { id: number; token: string };

  beforeAll(async () => {
    ({ db, close } = await target.open());
    await migrate(db, { chunkInterval: '1 hour' });
    fac = await facility(db, `hyper_${Math.random().toString(36).slice(2, 8)}`);
    gw = await gateway(db, { batchAgeMs: 10 });
  });

  afterAll(async () => {
    await gw?.stop();
    await close?.();
  });

  it('writes rows spanning several chunks exactly, with line protocol and JSON', async () => {
    const start = Date.UTC(2026, 10, 20, 21, 30) * 1_000_000; // ns; four hours → at least four 1-hour chunks
    const lines = Array.from({ length: 480 }, (_, i) => `kiln,zone=z${i % 3} temp=${(800 + i / 4).toFixed(2)},door=${i % 2 === 0} ${start + i * 30_000_000_000}`);
    const r = await post(gw.url, '/write?precision=ns', lines.join('\n'), { Authorization: `Token ${fac.token}` });
    expect(r.status, JSON.stringify(r.body)).toBe(204);
    const j = await post(gw.url, '/v1/metrics', JSON.stringify({ metrics: [{ name: 'kiln', tags: { zone: 'z0' }, fields: { temp: 1.5 }, time: '2026-11-21T03:00:00Z' }] }), {
      Authorization: `Token ${fac.token}`,
    });
    expect(j.status).toBe(204);

    const rows = await stored(db, fac.id);
    expect([...rows.keys()].sort()).toEqual(['kiln.door zone=z0', 'kiln.door zone=z1', 'kiln.door zone=z2', 'kiln.temp zone=z0', 'kiln.temp zone=z1', 'kiln.temp zone=z2']);
    expect(rows.get('kiln.temp zone=z0')).toHaveLength(161);
    expect(rows.get('kiln.temp zone=z1')![0]).toBe(`${(start + 30_000_000_000) / 1000}=800.25`);
    const total = [...rows.values()].reduce((n, v) => n + v.length, 0);
    expect(total).toBe(480 * 2 + 1);
    const chunks = await db.query<{ n: number }>(`SELECT count(*)::int AS n FROM timescaledb_information.chunks WHERE hypertable_schema = 'strata' AND hypertable_name = 'metrics'`);
    expect(chunks.rows[0]!.n).toBeGreaterThanOrEqual(5);
  });
});
