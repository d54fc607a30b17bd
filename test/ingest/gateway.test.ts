// The gateway over real HTTP, through PgBouncer (transaction pooling) into native PostgreSQL.
import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDb } from '../../src/db/open.ts';
import type { Db } from '../../src/db/port.ts';
import type { Gateway } from '../../src/ingest/gateway.ts';
import { freePort, urlFor } from '../support/cluster.ts';
import { cluster, createDatabase, type TestDatabase } from '../support/databases.ts';
import { METRICS_AUTH, METRICS_TOKEN, count, facility, gateway, plainSchema, post, stored } from '../support/gateway.ts';

let t: TestDatabase;
let admin: Db;
let gw: Gateway;
const tokens: Record<string, { id: number; token: string }> = {};

beforeAll(async () => {
  t = await createDatabase(cluster().adminUrl(), 'strata_gw');
  admin = await openDb(t.url);
  await plainSchema(admin);
  for (const code of ['north', 'south', 'east', 'west']) tokens[code] = await facility(admin, code);
  tokens.abroad = await facility(admin, 'abroad', 'other-region');
  const bouncer = new URL(cluster().bouncerUrl(t.name));
  const db = await openDb(bouncer.toString(), { max: 6 });
  gw = await gateway(db);
  afterAll(async () => {
    await gw.stop();
    await db.close();
  });
});

afterAll(async () => {
  await admin?.close();
  await t?.drop();
});

const metric = async (g: Gateway, name: string) => ((await g.metrics.registry.getSingleMetric(name)?.get())?.values ?? []).reduce((n, v) => n + v.value, 0);
const auth = (code: string) => ({ Authorization: `Token ${tokens[code]!.token}` });

/** Lines of one collector, with the rows they should produce (`key` → `µs=value`). */
function collector(n: number, name: string, base: bigint) {
  const lines: string[] = [];
  const expected = new Map<string, string[]>();
  for (let i = 0; i < n; i++) {
    const ns = base + BigInt(i) * 1_001_001n; // sub-microsecond parts are truncated to µs
    const temp = Math.round((20 + i / 7) * 1e6) / 1e6;
    lines.push(`boiler,collector=${name},unit=u${i % 5} temp=${temp},on=${i % 2 === 0},count=${i}i ${ns}`);
    const us = (ns / 1000n).toString();
    for (const [field, v] of [['temp', temp], ['on', i % 2 === 0 ? 1 : 0], ['count', i]] as const) {
      const key = `boiler.${field} collector=${name},unit=u${i % 5}`;
      expected.set(key, [...(expected.get(key) ?? []), `${us}=${v}`]);
    }
  }
  return { lines, expected };
}

function sortedMap(m: Map<string, string[]>) {
  return new Map([...m].sort(([a], [b]) => (a < b ? -1 : 1)).map(([k, v]) => [k, [...v].sort()]));
}

describe('ingest gateway through PgBouncer', () => {
  it('commits exactly the rows several concurrent collectors send, per facility and series, values and times exact', async () => {
    const plans = [
      { code: 'north', name: 'n1', path: '/api/v2/write', gzip: true },
      { code: 'north', name: 'n2', path: '/write?db=telegraf', gzip: false },
      { code: 'south', name: 's1', path: '/api/v2/write?org=o&bucket=b&precision=ns', gzip: true },
      { code: 'south', name: 's2', path: '/write?precision=ns', gzip: false },
      { code: 'east', name: 'e1', path: '/api/v2/write', gzip: false },
    ];
    const data = plans.map((p, i) => ({ ...p, ...collector(2_000, p.name, 1_763_700_000_000_000_000n + BigInt(i) * 7n) }));
    await Promise.all(
      data.map(async (d) => {
        for (let i = 0; i < d.lines.length; i += 250) {
          const body = d.lines.slice(i, i + 250).join('\n') + '\n';
          const r = await post(gw.url, d.path, d.gzip ? gzipSync(body) : body, { ...auth(d.code), ...(d.gzip ? { 'Content-Encoding': 'gzip' } : {}) });
          expect(r.status, JSON.stringify(r.body)).toBe(204);
        }
      }),
    );
    for (const code of ['north', 'south', 'east']) {
      const expected = new Map<string, string[]>();
      for (const d of data.filter((x) => x.code === code)) for (const [k, v] of d.expected) expected.set(k, [...(expected.get(k) ?? []), ...v]);
      expect(sortedMap(await stored(admin, tokens[code]!.id))).toEqual(sortedMap(expected));
    }
    expect(await count(admin)).toBe(5 * 2_000 * 3);
    const ledger = await admin.query<{ rows: number }>('SELECT sum(row_count)::int AS rows FROM strata.ingest_ledger');
    expect(ledger.rows[0]!.rows).toBe(5 * 2_000 * 3);
  });

  it('accepts the JSON endpoint with RFC 3339 and epoch-millisecond times', async () => {
    const before = await count(admin, `facility_id = ${tokens.east!.id}`);
    const r = await post(
      gw.url,
      '/v1/metrics',
      JSON.stringify({
        metrics: [
          { name: 'press', tags: { line: '3' }, fields: { temp: 71.5, running: true }, time: '2026-11-21T10:00:00.123456Z' },
          { name: 'press', tags: { line: '3' }, fields: { temp: 72.5 }, time: 1_763_719_200_000 },
        ],
      }),
      { Authorization: `Bearer ${tokens.east!.token}`, 'Content-Type': 'application/json' },
    );
    expect(r.status).toBe(204);
    expect(await count(admin, `facility_id = ${tokens.east!.id}`)).toBe(before + 3);
    const rows = await admin.query<{ t: string; value: number }>(
      `SELECT to_char(m.time AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US') AS t, m.value FROM strata.metrics m JOIN strata.series s ON s.id = m.series_id
        WHERE s.measurement = 'press' AND s.field = 'temp' ORDER BY m.time`,
    );
    expect(rows.rows).toEqual([
      { t: '2025-11-21T10:00:00.000000', value: 72.5 },
      { t: '2026-11-21T10:00:00.123456', value: 71.5 },
    ]);
  });

  it('authenticates as stock Telegraf does: Token, Bearer, Basic and u/p for v1', async () => {
    const tk = tokens.north!.token;
    const line = 'auth_check v=1\n';
    expect((await post(gw.url, '/api/v2/write', line, { Authorization: `Token ${tk}` })).status).toBe(204);
    expect((await post(gw.url, '/write', line, { Authorization: `Basic ${Buffer.from(`telegraf:${tk}`).toString('base64')}` })).status).toBe(204);
    expect((await post(gw.url, `/write?u=telegraf&p=${encodeURIComponent(tk)}`, line)).status).toBe(204);
    // Telegraf's outputs.influxdb asks to create its database first.
    const q = await fetch(`${gw.url}/query?q=${encodeURIComponent('CREATE DATABASE "telegraf"')}`, { method: 'POST' });
    expect(q.status).toBe(200);
    expect((await post(gw.url, `/api/v2/write?p=${encodeURIComponent(tk)}`, line)).status).toBe(401); // v2 takes no query credentials
  });

  it("writes every row under the token's facility: a line or metric cannot name another facility", async () => {
    const other = tokens.south!.id;
    const r = await post(gw.url, '/api/v2/write?precision=s', `spoof,facility_id=${other},facility=south v=1 1700000000\n`, auth('north'));
    expect(r.status).toBe(204);
    const rows = await admin.query<{ facility_id: number; tags: Record<string, string> }>(
      `SELECT m.facility_id, s.tags FROM strata.metrics m JOIN strata.series s ON s.id = m.series_id WHERE s.measurement = 'spoof'`,
    );
    expect(rows.rows).toEqual([{ facility_id: tokens.north!.id, tags: { facility: 'south', facility_id: String(other) } }]);
    const json = await post(gw.url, '/v1/metrics', JSON.stringify({ metrics: [{ name: 'spoof', facility_id: other, fields: { v: 2 } }] }), auth('north'));
    expect(json.status).toBe(400);
    expect((json.body.rejected as { reason: string }[])[0]!.reason).toMatch(/^metrics\[0\]: .*facility_id/);
    expect(await count(admin, `facility_id = ${other} AND series_id IN (SELECT id FROM strata.series WHERE measurement = 'spoof')`)).toBe(0);
  });

  it('refuses missing, wrong and other-region tokens before reading the body', async () => {
    const missing = await post(gw.url, '/api/v2/write', 'm v=1');
    expect(missing.status).toBe(401);
    expect(missing.body.message).toMatch(/missing credentials/);
    const wrong = await post(gw.url, '/api/v2/write', 'm v=1', { Authorization: 'Token stk_nope' });
    expect(wrong).toMatchObject({ status: 401, body: { message: expect.stringMatching(/^unknown ingest token/) } });
    const scheme = await post(gw.url, '/api/v2/write', 'm v=1', { Authorization: 'Digest abc' });
    expect(scheme.body.message).toMatch(/unsupported Authorization scheme "Digest"/);
    const abroad = await post(gw.url, '/api/v2/write', 'm v=1', auth('abroad'));
    expect(abroad.status).toBe(403);
    expect(abroad.body.message).toMatch(/facility abroad belongs to region other-region; this gateway serves region test-1/);
    expect(await count(admin, `facility_id = ${tokens.abroad!.id}`)).toBe(0);
  });

  it('needs no more than the strata_ingest role: a gateway logged in as a member of it writes and prunes', async () => {
    const login = `gw_login_${t.name.slice(-8)}`;
    await admin.exec(`CREATE ROLE ${login} LOGIN PASSWORD 'gw-pw' IN ROLE strata_ingest`);
    const url = new URL(t.url);
    url.username = login;
    url.password = 'gw-pw';
    const db = await openDb(url.toString(), { max: 3 });
    const g = await gateway(db);
    try {
      const r = await post(g.url, '/api/v2/write?precision=s', 'least_privilege,site=a v=1 1700000000\n', auth('west'));
      expect(r.status).toBe(204);
      expect(await count(admin, `series_id IN (SELECT id FROM strata.series WHERE measurement = 'least_privilege')`)).toBe(1);
      expect(await g.replayer.prune()).toBe(0);
      expect(await metric(g, 'strata_ingest_errors_total')).toBe(0);
    } finally {
      await g.stop();
      await db.close();
      await admin.exec(`DROP OWNED BY ${login}; DROP ROLE ${login}`);
    }
  });

  it('serves health, readiness and Prometheus metrics', async () => {
    expect((await fetch(`${gw.url}/health`)).status).toBe(200);
    const ready = await fetch(`${gw.url}/ready`);
    expect(ready.status).toBe(200);
    const text = await (await fetch(`${gw.url}/metrics`, { headers: METRICS_AUTH })).text();
    for (const name of [
      'strata_ingest_rows_received_total{facility="north"}',
      'strata_ingest_rows_committed_total{facility="north"}',
      'strata_ingest_bytes_received_total',
      'strata_ingest_batch_rows_bucket',
      'strata_ingest_copy_seconds_bucket',
      'strata_ingest_queued_bytes',
      'strata_ingest_spool_bytes',
      'strata_ingest_spool_oldest_age_seconds',
      'strata_ingest_duplicates_avoided_total',
    ]) {
      expect(text).toContain(name);
    }
    const committed = Number(/strata_ingest_rows_committed_total\{facility="south"\} (\d+)/.exec(text)?.[1]);
    expect(committed).toBe(await count(admin, `facility_id = ${tokens.south!.id}`));
    expect((await fetch(`${gw.url}/nope`)).status).toBe(404);
    expect((await fetch(`${gw.url}/write`)).status).toBe(405);
  });

  it('shows anonymous callers no facility code and no database host: /metrics wants the metrics token, /ready keeps its details', async () => {
    for (const headers of [{}, { Authorization: 'Bearer wrong-token-0123456789' }, { Authorization: `Token ${tokens.north!.token}` }] as Record<string, string>[]) {
      const r = await fetch(`${gw.url}/metrics`, { headers });
      const text = await r.text();
      expect(r.status).toBe(401);
      expect(r.headers.get('www-authenticate')).toBe('Bearer');
      expect(JSON.parse(text)).toMatchObject({ message: 'the metrics name every facility: send "Authorization: Bearer <STRATA_METRICS_TOKEN>"' });
      expect(text).not.toMatch(/north|south/);
    }
    // Without a token configured the metrics are not served at all.
    const bare = await gateway(admin, { metricsToken: undefined });
    try {
      const r = await fetch(`${bare.url}/metrics`, { headers: METRICS_AUTH });
      expect(r.status).toBe(403);
      expect(((await r.json()) as { message: string }).message).toMatch(/set STRATA_METRICS_TOKEN/);
    } finally {
      await bare.stop();
    }
    // A database that cannot be reached: anonymous /ready says so, the metrics token also gets the database's own error (its host).
    const gone = await openDb(urlFor(await freePort(), 'nowhere'), { max: 1 });
    const down = await gateway(gone, { metricsToken: METRICS_TOKEN });
    try {
      const anonymous = await fetch(`${down.url}/ready`);
      const text = await anonymous.text();
      expect(anonymous.status).toBe(503);
      expect(text).toContain('facilities not loaded yet: the database has not answered since start');
      expect(text).not.toMatch(/127\.0\.0\.1|nowhere|ECONNREFUSED/);
      const detailed = await (await fetch(`${down.url}/ready`, { headers: METRICS_AUTH })).text();
      expect(detailed).toMatch(/facilities not loaded yet: the database has not answered since start \(.*127\.0\.0\.1.*\)/);
    } finally {
      await down.stop();
      await gone.close();
    }
  });
});
