// The per-facility series limit is held by the database (sql/0009): two gateways on one database,
// each with its own cache, never take a facility past it, refuse the rest per line, and leave other
// facilities alone. Native PostgreSQL through PgBouncer, and PGlite-TimescaleDB (plus a TimescaleDB
// server when STRATA_TEST_TIMESCALE_URL is set) through migrate.
import { randomBytes } from 'node:crypto';
import { cpSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SQL_DIR, migrate } from '../../src/db/migrate.ts';
import { openDb } from '../../src/db/open.ts';
import type { Db } from '../../src/db/port.ts';
import { newToken, tokenHash } from '../../src/facilities/secrets.ts';
import type { Gateway } from '../../src/ingest/gateway.ts';
import { cluster, createDatabase, timescaleTargets, type TestDatabase } from '../support/databases.ts';
import { facility, gateway, plainSchema, post, type Reply } from '../support/gateway.ts';

const LIMIT = 100;
const limitReason = (code: string, key: string) => `series limit of ${LIMIT} reached for facility ${code}: new series ${key} not created`;

/** Series per facility in the catalog, and the counter the database keeps. */
async function seriesOf(db: Db, facilityId: number): Promise<{ rows: number; counted: number }> {
  const r = await db.query<{ rows: number; counted: number | null }>(
    'SELECT (SELECT count(*)::int FROM strata.series WHERE facility_id = $1) AS rows, (SELECT series::int FROM strata.facility_series WHERE facility_id = $1) AS counted',
    [facilityId],
  );
  return { rows: r.rows[0]!.rows, counted: r.rows[0]!.counted ?? 0 };
}

/** Values stored for a facility's rows (every line in these tests carries a unique value). */
async function values(db: Db, facilityId: number): Promise<number[]> {
  const r = await db.query<{ value: number }>('SELECT value FROM strata.metrics WHERE facility_id = $1 ORDER BY value', [facilityId]);
  return r.rows.map((x) => x.value);
}

/** One line per value: `probe,sensor=<sensor> v=<value>`. */
const line = (sensor: string, value: number) => `probe,sensor=${sensor} v=${value} ${1_700_000_000 + value}`;

interface Sent {
  lines: { sensor: string; value: number }[];
  reply: Reply;
}

/** What the replies say: accepted and refused sensors, and the values of accepted lines. */
function outcome(sent: Sent[], code: string) {
  const accepted = new Set<string>();
  const refused = new Set<string>();
  const written: number[] = [];
  for (const s of sent) {
    expect([204, 400], JSON.stringify(s.reply.body)).toContain(s.reply.status);
    const rejected = s.reply.status === 400 ? (s.reply.body.rejected as { line: number; reason: string }[]) : [];
    const refusedLines = new Set(rejected.map((e) => e.line));
    for (const e of rejected) expect(e.reason).toBe(limitReason(code, 'probe.v'));
    if (s.reply.status === 400) {
      expect(s.reply.body.rejectedCount).toBe(rejected.length);
      expect(s.reply.body.written).toBe(s.lines.length - rejected.length);
    }
    s.lines.forEach((l, i) => {
      if (refusedLines.has(i + 1)) refused.add(l.sensor);
      else {
        accepted.add(l.sensor);
        written.push(l.value);
      }
    });
  }
  return { accepted, refused, written: written.sort((a, b) => a - b) };
}

describe('series limit across two gateways on native PostgreSQL', () => {
  let t: TestDatabase;
  let admin: Db;
  const pools: Db[] = [];
  const gateways: Gateway[] = [];
  let a: Gateway;
  let b: Gateway;
  const fac: Record<string, { id: number; token: string }> = {};
  const auth = (code: string) => ({ Authorization: `Token ${fac[code]!.token}` });

  beforeAll(async () => {
    t = await createDatabase(cluster().adminUrl(), 'strata_limit');
    admin = await openDb(t.url);
    await plainSchema(admin);
    for (const code of ['alpha', 'beta', 'gamma']) fac[code] = await facility(admin, code);
    // Series inserted directly are counted too.
    await admin.query(`INSERT INTO strata.series (facility_id, measurement, field, tags) SELECT $1, 'probe', 'v', jsonb_build_object('sensor', 'old' || g) FROM generate_series(1, 10) g`, [fac.alpha!.id]);
    for (let i = 0; i < 2; i++) {
      const db = await openDb(cluster().bouncerUrl(t.name), { max: 4 });
      pools.push(db);
      gateways.push(await gateway(db, { seriesLimit: LIMIT }));
    }
    [a, b] = gateways as [Gateway, Gateway];
  });

  afterAll(async () => {
    for (const g of gateways) await g.stop();
    for (const p of pools) await p.close();
    await admin?.close();
    await t?.drop();
  });

  it('counts series in the database, and the gateway role may only create them through strata.create_series', async () => {
    expect(await seriesOf(admin, fac.alpha!.id)).toEqual({ rows: 10, counted: 10 });
    const asIngest = (sql: string) =>
      admin.transaction(async (tx) => {
        await tx.exec('SET LOCAL ROLE strata_ingest');
        return tx.query(sql);
      });
    await expect(asIngest(`INSERT INTO strata.series (facility_id, measurement, field) VALUES (${fac.beta!.id}, 'direct', 'v')`)).rejects.toThrow(/permission denied/);
    await expect(asIngest('SELECT * FROM strata.facility_series')).rejects.toThrow(/permission denied/);
    await expect(asIngest(`UPDATE strata.facility_series SET series = 0`)).rejects.toThrow(/permission denied/);
    const r = await asIngest(`SELECT * FROM strata.create_series(${fac.beta!.id}, 0, ARRAY['direct'], ARRAY['v'], ARRAY['{}'])`);
    expect(r.rows).toEqual([]);
  });

  it('serializes concurrent strata.create_series calls of one facility on 8 connections', async () => {
    const delta = await facility(admin, 'delta');
    const db = await openDb(t.url, { max: 8 });
    try {
      const call = (keys: string[]) =>
        db.query<{ n: number; id: number; created: boolean }>('SELECT n, id, created FROM strata.create_series($1, $2, $3::text[], $4::text[], $5::text[])', [
          delta.id,
          LIMIT,
          keys.map(() => 'probe'),
          keys.map(() => 'v'),
          keys.map((sensor) => JSON.stringify({ sensor })),
        ]);
      // 8 calls at a time, 3 rounds, 40 keys each from a pool of 300 (neighbours overlap).
      const answers: { keys: string[]; rows: { n: number; id: number; created: boolean }[] }[] = [];
      for (let round = 0; round < 3; round++) {
        const batch = Array.from({ length: 8 }, (_, c) => Array.from({ length: 40 }, (_, k) => `d${(round * 97 + c * 30 + k) % 300}`));
        answers.push(...(await Promise.all(batch.map(async (keys) => ({ keys, rows: (await call(keys)).rows })))));
      }
      expect(await seriesOf(admin, delta.id)).toEqual({ rows: LIMIT, counted: LIMIT });
      const ids = new Map((await admin.query<{ id: number; sensor: string }>(`SELECT id, tags->>'sensor' AS sensor FROM strata.series WHERE facility_id = $1`, [delta.id])).rows.map((r) => [r.sensor, r.id]));
      let created = 0;
      for (const a of answers) {
        // Every key that exists is answered with its id; no other key is.
        expect(a.rows.map((r) => [a.keys[r.n - 1], r.id]).sort()).toEqual(a.keys.filter((k) => ids.has(k)).map((k) => [k, ids.get(k)]).sort());
        created += a.rows.filter((r) => r.created).length;
      }
      expect(created).toBe(LIMIT);
    } finally {
      await db.close();
    }
  });

  it('holds the limit for concurrent requests of one facility to both gateways, refusing the rest per line', async () => {
    // Both caches loaded (10 series known) before the new series arrive, as on gateways long running.
    for (const [i, g] of gateways.entries()) expect((await post(g.url, '/api/v2/write?precision=s', line('old1', 1_000_000 + i), auth('alpha'))).status).toBe(204);
    // 8 requests (4 per gateway) of 50 lines: 40 new series from a pool of 200 (neighbours overlap)
    // and 10 lines of the series that already exist.
    let value = 0;
    const requests = Array.from({ length: 8 }, (_, r) => {
      const lines: Sent['lines'] = [];
      for (let k = 0; k < 40; k++) lines.push({ sensor: `new${(r * 25 + k) % 200}`, value: ++value });
      for (let k = 1; k <= 10; k++) lines.splice(k * 4, 0, { sensor: `old${k}`, value: ++value });
      return { g: r % 2 === 0 ? a : b, lines };
    });
    // Meanwhile another facility gets 60 new series through both gateways.
    const others = Array.from({ length: 4 }, (_, r) => ({ g: r % 2 === 0 ? a : b, lines: Array.from({ length: 15 }, (_, k) => ({ sensor: `b${r * 15 + k}`, value: 10_000 + r * 15 + k })) }));
    const send = (code: string) => async (q: { g: Gateway; lines: Sent['lines'] }) => ({
      lines: q.lines,
      reply: await post(q.g.url, '/api/v2/write?precision=s', q.lines.map((l) => line(l.sensor, l.value)).join('\n'), auth(code)),
    });
    const [sent, sentOther] = await Promise.all([Promise.all(requests.map(send('alpha'))), Promise.all(others.map(send('beta')))]);

    expect(await seriesOf(admin, fac.alpha!.id)).toEqual({ rows: LIMIT, counted: LIMIT });
    const o = outcome(sent, 'alpha');
    expect(o.refused.size).toBeGreaterThan(0);
    for (const sensor of o.refused) expect(o.accepted.has(sensor), sensor).toBe(false);
    for (let k = 1; k <= 10; k++) expect(o.refused.has(`old${k}`)).toBe(false);
    const catalog = await admin.query<{ sensor: string }>(`SELECT tags->>'sensor' AS sensor FROM strata.series WHERE facility_id = $1 ORDER BY 1`, [fac.alpha!.id]);
    expect(catalog.rows.map((x) => x.sensor)).toEqual([...o.accepted].sort());
    expect(await values(admin, fac.alpha!.id)).toEqual([...o.written, 1_000_000, 1_000_001].sort((x, y) => x - y));

    // The other facility is untouched by alpha's limit.
    for (const s of sentOther) expect(s.reply.status, JSON.stringify(s.reply.body)).toBe(204);
    expect(await seriesOf(admin, fac.beta!.id)).toEqual({ rows: 60, counted: 60 });
    expect(await values(admin, fac.beta!.id)).toEqual(Array.from({ length: 60 }, (_, i) => 10_000 + i));
  });

  it('answers series another gateway created and refuses new ones, whichever gateway is asked', async () => {
    const all = (await admin.query<{ sensor: string }>(`SELECT tags->>'sensor' AS sensor FROM strata.series WHERE facility_id = $1 AND tags->>'sensor' LIKE 'new%'`, [fac.alpha!.id])).rows.map((x) => x.sensor);
    for (const [i, g] of gateways.entries()) {
      const body = [...all.map((s, k) => line(s, 2_000_000 + i * 1000 + k)), line('later', 2_000_999 + i * 1000)].join('\n');
      const r = await post(g.url, '/api/v2/write?precision=s', body, auth('alpha'));
      expect(r.status).toBe(400);
      expect(r.body.written).toBe(all.length);
      expect(r.body.rejected).toEqual([{ line: all.length + 1, reason: limitReason('alpha', 'probe.v') }]);
    }
    expect(await seriesOf(admin, fac.alpha!.id)).toEqual({ rows: LIMIT, counted: LIMIT });
  });

  it('still bisects what the database refuses for its data, and creates the other keys in input order up to the limit', async () => {
    const db = await openDb(cluster().bouncerUrl(t.name), { max: 2 });
    pools.push(db);
    const open = await gateway(db, { seriesLimit: LIMIT, maxSeriesKeyBytes: 1 << 20 });
    gateways.push(open);
    // 120 new keys, two of them too large for the catalog's index: 118 good ones for 100 places.
    const wide = (n: number) => randomBytes(n).toString('base64').slice(0, n).replace(/[+/=]/g, 'x');
    const sensors = Array.from({ length: 120 }, (_, i) => (i === 4 || i === 70 ? wide(3000 + i) : `g${i}`));
    const r = await post(open.url, '/api/v2/write?precision=s', sensors.map((s, i) => line(s, i)).join('\n'), auth('gamma'));
    expect(r.status).toBe(400);
    expect(r.body.written).toBe(100);
    const rejected = r.body.rejected as { line: number; reason: string }[];
    expect(rejected.filter((e) => /^the database refused series probe\.v: index row/.test(e.reason)).map((e) => e.line)).toEqual([5, 71]);
    const good = sensors.map((_, i) => i).filter((i) => i !== 4 && i !== 70);
    expect(rejected.filter((e) => e.reason === limitReason('gamma', 'probe.v')).map((e) => e.line)).toEqual(good.slice(100).map((i) => i + 1));
    expect(await seriesOf(admin, fac.gamma!.id)).toEqual({ rows: LIMIT, counted: LIMIT });
    expect(await values(admin, fac.gamma!.id)).toEqual(good.slice(0, 100));
  });
});

describe.each(timescaleTargets())('series limit on $name', (target) => {
  let db: Db;
  let close: () => Promise<void>;
  const gateways: Gateway[] = [];
  const dirs: string[] = [];
  let one: { id: number; token: string };
  let two: { id: number; token: string };
  const tag = randomBytes(3).toString('hex');

  beforeAll(async () => {
    ({ db, close } = await target.open());
    // Migrations up to 0008 first, series written, then 0009 counts them (and the later ones follow).
    const dir = mkdtempSync(join(tmpdir(), 'strata-sql-'));
    dirs.push(dir);
    cpSync(SQL_DIR, dir, { recursive: true });
    for (const f of readdirSync(dir)) if (f >= '0009') rmSync(join(dir, f));
    await migrate(db, { chunkInterval: '1 day', dir: dir + '/' });
    // As facility add did at 0008 (its audit entry needs 0010): the row with its token's hash.
    const add = async (code: string) => {
      const token = newToken();
      const r = await db.query<{ id: number }>(`INSERT INTO strata.facilities (code, region, token_hash, reader_role) VALUES ($1, 'test-1', $2, $3) RETURNING id`, [code, tokenHash(token), `strata_reader_${code}`]);
      return { id: r.rows[0]!.id, token };
    };
    one = await add(`one_${tag}`);
    two = await add(`two_${tag}`);
    await db.query(`INSERT INTO strata.series (facility_id, measurement, field, tags) SELECT $1, 'probe', 'v', jsonb_build_object('sensor', 'old' || g) FROM generate_series(1, 5) g`, [one.id]);
    await db.query(`INSERT INTO strata.series (facility_id, measurement, field) VALUES ($1, 'probe', 'v')`, [two.id]);
  }, 180_000);

  afterAll(async () => {
    for (const g of gateways) await g.stop();
    await close?.();
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  it('applies 0009 with migrate and back-fills the counts of existing series', async () => {
    const r = await migrate(db, { chunkInterval: '1 day' });
    expect(r.applied).toEqual(['0009_series_quota', '0010_facility_lifecycle']);
    expect(await seriesOf(db, one.id)).toEqual({ rows: 5, counted: 5 });
    expect(await seriesOf(db, two.id)).toEqual({ rows: 1, counted: 1 });
  });

  it('creates through strata.create_series as strata_ingest: input order, existing keys answered, none past the limit', async () => {
    const call = (limit: number, keys: [string, string][]) =>
      db.transaction(async (tx) => {
        await tx.exec('SET LOCAL ROLE strata_ingest');
        const r = await tx.query<{ n: number; id: number; created: boolean }>('SELECT n, id, created FROM strata.create_series($1, $2, $3::text[], $4::text[], $5::text[]) ORDER BY n', [
          one.id,
          limit,
          keys.map(() => 'probe'),
          keys.map(([field]) => field),
          keys.map(([, sensor]) => JSON.stringify({ sensor })),
        ]);
        return r.rows.map((x) => [x.n, x.created]);
      });
    // 5 exist; room for 3 of the 5 new keys (the first three), the existing one answered.
    expect(await call(8, [['v', 'n1'], ['v', 'n2'], ['v', 'old1'], ['v', 'n3'], ['v', 'n4'], ['v', 'n5']])).toEqual([[1, true], [2, true], [3, false], [4, true]]);
    expect(await seriesOf(db, one.id)).toEqual({ rows: 8, counted: 8 });
    // At the limit: existing keys still answered, new ones not created.
    expect(await call(8, [['v', 'n6'], ['v', 'n3']])).toEqual([[2, false]]);
    // A repeated key is created once and answered for each ordinal.
    expect(await call(9, [['w', 'd'], ['w', 'd']])).toEqual([[1, true], [2, true]]);
    expect(await seriesOf(db, one.id)).toEqual({ rows: 9, counted: 9 });
    await expect(db.query(`SELECT * FROM strata.create_series($1, NULL, ARRAY['m'], ARRAY['f'], ARRAY['{}'])`, [one.id])).rejects.toThrow(/series_limit must be a non-negative integer/);
  });

  it('holds the limit for two gateways (two caches) on one database', async () => {
    for (let i = 0; i < 2; i++) {
      gateways.push(await gateway(db, { seriesLimit: 20, batchAgeMs: 10 }));
    }
    const send = (g: Gateway, body: string) => post(g.url, '/api/v2/write?precision=s', body, { Authorization: `Token ${two.token}` });
    // Both caches hold the one existing series (`probe v`, no tags) before either creates any.
    for (const [i, g] of gateways.entries()) expect((await send(g, `probe v=${900 + i} 1700000900`)).status).toBe(204);
    // 15 new series to each: 19 places left.
    const replies = await Promise.all(gateways.map((g, i) => send(g, Array.from({ length: 15 }, (_, k) => line(`g${i}_${k}`, i * 100 + k)).join('\n'))));
    expect(await seriesOf(db, two.id)).toEqual({ rows: 20, counted: 20 });
    let written = 0;
    const refused: string[] = [];
    for (const r of replies) {
      expect([204, 400]).toContain(r.status);
      const rejected = r.status === 400 ? (r.body.rejected as { reason: string }[]) : [];
      written += r.status === 400 ? (r.body.written as number) : 15;
      refused.push(...rejected.map((e) => e.reason));
    }
    expect(written).toBe(19);
    expect(refused).toEqual(Array.from({ length: 11 }, () => `series limit of 20 reached for facility two_${tag}: new series probe.v not created`));
    expect((await db.query<{ n: number }>('SELECT count(*)::int AS n FROM strata.metrics WHERE facility_id = $1', [two.id])).rows[0]!.n).toBe(2 + 19);
  });

  it('keeps the count through deletes, updates and truncation', async () => {
    await db.query(`DELETE FROM strata.series WHERE facility_id = $1 AND tags->>'sensor' IN ('n1', 'n2')`, [one.id]);
    expect(await seriesOf(db, one.id)).toEqual({ rows: 7, counted: 7 });
    await db.query(`UPDATE strata.series SET facility_id = $2 WHERE facility_id = $1 AND field = 'w'`, [one.id, two.id]);
    expect(await seriesOf(db, one.id)).toEqual({ rows: 6, counted: 6 });
    expect(await seriesOf(db, two.id)).toEqual({ rows: 21, counted: 21 });
    await db.exec('TRUNCATE strata.series');
    expect(await seriesOf(db, one.id)).toEqual({ rows: 0, counted: 0 });
    expect(await seriesOf(db, two.id)).toEqual({ rows: 0, counted: 0 });
  });
});
