// Bad input gets its documented status and a message naming what was wrong and where; the rest of
// the request's data is written intact and nothing else is disturbed.
import { randomBytes } from 'node:crypto';
import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDb } from '../../src/db/open.ts';
import type { Db } from '../../src/db/port.ts';
import type { Gateway } from '../../src/ingest/gateway.ts';
import { cluster, createDatabase, type TestDatabase } from '../support/databases.ts';
import { count, facility, gateway, plainSchema, post } from '../support/gateway.ts';

let t: TestDatabase;
let admin: Db;
let db: Db;
let gw: Gateway;
let fac: { id: number; token: string };
const LIMIT = 12 << 20;

beforeAll(async () => {
  t = await createDatabase(cluster().adminUrl(), 'strata_bad');
  admin = await openDb(t.url);
  await plainSchema(admin);
  fac = await facility(admin, 'plant');
  db = await openDb(cluster().bouncerUrl(t.name), { max: 4 });
  gw = await gateway(db, { maxBodyBytes: LIMIT, seriesLimit: 20 });
});

afterAll(async () => {
  await gw?.stop();
  await db?.close();
  await admin?.close();
  await t?.drop();
});

const write = (body: string | Uint8Array, headers: Record<string, string> = {}, path = '/api/v2/write?precision=s') =>
  post(gw.url, path, body, { Authorization: `Token ${fac.token}`, ...headers });
const rows = (measurement: string) => count(admin, `series_id IN (SELECT id FROM strata.series WHERE measurement = '${measurement}')`);

describe('bad input', () => {
  it('writes the good lines of a request with malformed ones and names each rejected line', async () => {
    const body = ['ok1 v=1 1700000000', 'no_fields', 'ok1 v=2 1700000001', 'bad,tag v=1', '', '# comment', 'ok1 v=x 1700000002', 'ok1 v=3 1700000003 junk', 'ok1 v=4 1700000004'].join('\n');
    const r = await write(body);
    expect(r.status).toBe(400);
    expect(r.body.written).toBe(3);
    expect(r.body.rejected).toEqual([
      { line: 2, reason: 'missing fields' },
      { line: 4, reason: 'tag "tag" has no value' },
      { line: 7, reason: 'field "v": invalid field value "x"' },
      { line: 8, reason: 'unexpected text after the timestamp: "junk"' },
    ]);
    expect(r.body.message).toMatch(/^partial write: 4 line\(s\) with errors, 3 row\(s\) written; first: line 2: missing fields/);
    expect(await rows('ok1')).toBe(3);
  });

  it('rejects invalid UTF-8 per line', async () => {
    const body = Buffer.concat([Buffer.from('utf v=1 1700000000\nutf,t='), Buffer.from([0xc3, 0x28]), Buffer.from(' v=2 1700000001\nutf v=3 1700000002\n')]);
    const r = await write(body);
    expect(r.status).toBe(400);
    expect(r.body.rejected).toEqual([{ line: 2, reason: 'invalid UTF-8' }]);
    expect(await rows('utf')).toBe(2);
  });

  it('rejects string fields per field and keeps the line’s numeric fields', async () => {
    const r = await write('strf,a=b name="pump \\"7\\"",temp=3.5 1700000000\n');
    expect(r.status).toBe(400);
    expect(r.body.rejected).toEqual([{ line: 1, reason: 'field "name": string values are not accepted (only numbers and booleans)' }]);
    expect(await rows('strf')).toBe(1);
  });

  it('rejects timestamps outside the representable range', async () => {
    const r = await write('range v=1 9223372036854775\nrange v=2 1700000000\nrange v=3 -9300000000\n');
    expect(r.status).toBe(400);
    expect(r.body.rejected).toEqual([
      { line: 1, reason: 'timestamp 9223372036854775 (precision s) is out of range (years 1677–2262)' },
      { line: 3, reason: 'timestamp -9300000000 (precision s) is out of range (years 1677–2262)' },
    ]);
    expect(await rows('range')).toBe(1);
    const json = await post(gw.url, '/v1/metrics', JSON.stringify({ metrics: [{ name: 'range', fields: { v: 4 }, time: 1e17 }, { name: 'range', fields: { v: 5 }, time: 'yesterday' }] }), { Authorization: `Token ${fac.token}` });
    expect(json.status).toBe(400);
    expect(json.body.rejected).toEqual([
      { index: 0, reason: 'metrics[0].time: time 100000000000000000 is out of range (years 1677–2262)' },
      { index: 1, reason: 'metrics[1].time: time "yesterday" is not an RFC 3339 timestamp such as "2026-11-21T10:00:00Z"' },
    ]);
  });

  it('rejects a 10 MB line with its number and writes the lines around it', async () => {
    const big = `huge v=1,pad=${'9'.repeat(10 * 1024 * 1024)}`;
    const r = await write(`long v=1 1700000000\n${big}\nlong v=2 1700000001\n`);
    expect(r.status).toBe(400);
    expect(r.body.rejected).toEqual([{ line: 2, reason: `line is ${big.length} bytes long; the limit is 1048576` }]);
    expect(await rows('long')).toBe(2);
    expect(await rows('huge')).toBe(0);
  });

  it('answers 413 above the body limit, plain or once decompressed, and writes nothing', async () => {
    const body = 'over v=1 1700000000\n'.repeat(Math.ceil((LIMIT + 10) / 20));
    const plain = await write(body);
    expect(plain.status).toBe(413);
    expect(plain.body.message).toMatch(/exceeds the limit of 12582912 bytes; split the batch/);
    const bomb = await write(gzipSync(body), { 'Content-Encoding': 'gzip' });
    expect(bomb.status).toBe(413);
    expect(bomb.body.message).toMatch(/decompressed body exceeds the limit/);
    expect(await rows('over')).toBe(0);
  });

  it('answers 400 to a truncated or corrupt gzip body and 415 to an unknown encoding', async () => {
    const gz = gzipSync('trunc v=1 1700000000\n'.repeat(1000));
    const truncated = await write(gz.subarray(0, gz.length - 20), { 'Content-Encoding': 'gzip' });
    expect(truncated.status).toBe(400);
    expect(truncated.body.message).toMatch(/gzip body is corrupt or truncated/);
    const garbage = await write(Buffer.from('not gzip at all'), { 'Content-Encoding': 'gzip' });
    expect(garbage.status).toBe(400);
    const br = await write('x v=1', { 'Content-Encoding': 'br' });
    expect(br).toMatchObject({ status: 415, body: { message: 'Content-Encoding "br" is not supported; send gzip or identity' } });
    expect(await rows('trunc')).toBe(0);
  });

  it('rejects an unknown precision and malformed JSON with the reason', async () => {
    const p = await write('m v=1', {}, '/api/v2/write?precision=h');
    expect(p).toMatchObject({ status: 400, body: { message: 'precision=h is not supported; use one of ns, us, ms, s' } });
    const j = await post(gw.url, '/v1/metrics', '{"metrics": [', { Authorization: `Token ${fac.token}` });
    expect(j.status).toBe(400);
    expect(j.body.message).toMatch(/^body is not valid UTF-8 JSON/);
    const shape = await post(gw.url, '/v1/metrics', '{"points": []}', { Authorization: `Token ${fac.token}` });
    expect(shape.status).toBe(400);
    expect(shape.body.message).toMatch(/body\.metrics: /);
  });

  it('stops a facility at its series limit with a clear reason and keeps its existing series writable', async () => {
    const before = Number((await admin.query<{ n: number }>('SELECT count(*)::int AS n FROM strata.series WHERE facility_id = $1', [fac.id])).rows[0]!.n);
    const room = 20 - before;
    expect(room).toBeGreaterThan(2);
    const lines = Array.from({ length: room + 5 }, (_, i) => `card,sensor=s${i} v=${i} 1700000000`);
    const r = await write(lines.join('\n'));
    expect(r.status).toBe(400);
    expect(r.body.written).toBe(room);
    const rejected = r.body.rejected as { line: number; reason: string }[];
    expect(rejected.map((x) => x.line)).toEqual([room + 1, room + 2, room + 3, room + 4, room + 5]);
    expect(rejected[0]!.reason).toBe('series limit of 20 reached for facility plant: new series card.v not created');
    expect((await admin.query<{ n: number }>('SELECT count(*)::int AS n FROM strata.series WHERE facility_id = $1', [fac.id])).rows[0]!.n).toBe(20);
    expect((await write('card,sensor=s0 v=100 1700000100')).status).toBe(204);
  });
});

describe('lines the series catalog cannot store cost only themselves', () => {
  let open: Gateway;
  let tight: Gateway;
  let plant: { id: number; token: string };
  /** Incompressible printable text (the index compresses a repetitive value below its row limit). */
  const random = (n: number) => randomBytes(n).toString('base64').slice(0, n).replace(/[+/=]/g, 'x');
  let standard: Gateway;

  beforeAll(async () => {
    plant = await facility(admin, 'keys');
    // No key limit to speak of, so the database itself refuses what validation would have caught.
    open = await gateway(db, { maxSeriesKeyBytes: 1 << 20 });
    tight = await gateway(db, { maxSeriesKeyBytes: 100 });
    standard = await gateway(db);
  });

  afterAll(async () => {
    await open?.stop();
    await tight?.stop();
    await standard?.stop();
  });

  const send = (g: Gateway, body: string, path = '/api/v2/write?precision=s') => post(g.url, path, body, { Authorization: `Token ${plant.token}` });

  it('rejects a line with a NUL byte in any name with 400 and its reason; the request’s good lines are written', async () => {
    const body = ['nul v=1 1700000000', 'nul,t=a\u0000b v=2 1700000001', 'nul\u0000x v=3 1700000002', 'nul,t\u0000=a v=4 1700000003', 'nul v\u0000=5 1700000004', 'nul v=6 1700000005'].join('\n');
    const r = await send(standard, body);
    expect(r.status).toBe(400);
    expect(r.body.written).toBe(2);
    expect((r.body.rejected as { line: number }[]).map((e) => e.line)).toEqual([2, 3, 4, 5]);
    expect((r.body.rejected as { reason: string }[])[0]!.reason).toBe('the value of tag "t" holds a NUL byte, which cannot be stored');
    expect(await rows('nul')).toBe(2);
  });

  it('rejects a line whose series key is over the limit, naming the limit, and writes the rest', async () => {
    const r = await send(tight, `short v=1 1700000000\nshort,t=${'a'.repeat(200)} v=2 1700000001\nshort v=3 1700000002\n`);
    expect(r.status).toBe(400);
    expect(r.body.written).toBe(2);
    expect(r.body.rejected).toEqual([{ line: 2, reason: 'series key of 215 bytes (short.v) exceeds the limit of 100 bytes' }]);
  });

  it('rejects a 3,000-byte random tag value with the default limit before the database sees it', async () => {
    const r = await send(standard, `wide v=1 1700000000\nwide,t=${random(3000)} v=2 1700000001\n`);
    expect(r.status).toBe(400);
    expect(r.body.rejected).toEqual([{ line: 2, reason: 'series key of 3014 bytes (wide.v) exceeds the limit of 2048 bytes' }]);
    expect(await rows('wide')).toBe(1);
  });

  it('finds the lines the database refuses (index row too large) by bisecting, and writes every other new series', async () => {
    const lines = Array.from({ length: 40 }, (_, i) => (i === 7 || i === 30 ? `bisect,t=${random(3000 + i)} v=${i} 1700000000` : `bisect,n=${i} v=${i} 1700000000`));
    const r = await send(open, lines.join('\n'));
    expect(r.status).toBe(400);
    expect(r.body.written).toBe(38);
    const rejected = r.body.rejected as { line: number; reason: string }[];
    expect(rejected.map((e) => e.line)).toEqual([8, 31]);
    expect(rejected[0]!.reason).toMatch(/^the database refused series bisect\.v: index row (size \d+ exceeds|requires \d+ bytes)/);
    expect(await rows('bisect')).toBe(38);
  });

  it('answers the JSON endpoint the same way when jsonb refuses a NUL in a tag', async () => {
    const metrics = [{ name: 'jnul', tags: { t: 'ok' }, fields: { v: 1 } }, { name: 'jnul', tags: { t: 'a\u0000b' }, fields: { v: 2 } }, { name: 'jnul', tags: { t: 'fine' }, fields: { v: 3 } }];
    const r = await post(open.url, '/v1/metrics', JSON.stringify({ metrics }), { Authorization: `Token ${plant.token}` });
    expect(r.status).toBe(400);
    expect(r.body.written).toBe(2);
    expect(r.body.rejected).toEqual([{ index: 1, reason: expect.stringMatching(/^the database refused series jnul\.v: unsupported Unicode escape sequence/) }]);
    expect(await rows('jnul')).toBe(2);
  });
});

describe('the accepted time window', () => {
  const YEAR_S = 31_556_952;
  let tw: Gateway;
  let site: { id: number; token: string };

  beforeAll(async () => {
    site = await facility(admin, 'windowed');
    tw = await gateway(db, { timeWindow: { pastMs: 10 * YEAR_S * 1000, futureMs: 86_400_000, pastText: '10 years', futureText: '1 day' } });
  });
  afterAll(async () => {
    await tw?.stop();
  });

  const send = (body: string, path = '/api/v2/write?precision=s') => post(tw.url, path, body, { Authorization: `Token ${site.token}` });
  const now = () => Math.floor(Date.now() / 1000);
  const seriesNamed = async (measurement: string) =>
    Number((await admin.query<{ n: number }>('SELECT count(*)::int AS n FROM strata.series WHERE facility_id = $1 AND measurement = $2', [site.id, measurement])).rows[0]!.n);

  it('refuses a line too far in the past or the future with 400 and the reason, cached series or new, and writes the rest', async () => {
    expect((await send(`tw v=0 ${now()}`)).status).toBe(204); // the series is cached: the next lines take the fast path
    const t = now();
    const r = await send([`tw v=1 ${t - 11 * YEAR_S}`, `tw v=2 ${t - 9 * YEAR_S}`, `tw v=3 ${t + 3 * 86_400}`, `tw v=4 ${t}`, `tw_new v=5 ${t - 20 * YEAR_S}`, `tw_new v=6 -2208988800`].join('\n'));
    expect(r.status).toBe(400);
    expect(r.body.written).toBe(2);
    const rejected = r.body.rejected as { line: number; reason: string }[];
    expect(rejected.map((x) => x.line)).toEqual([1, 3, 5, 6]);
    expect(rejected[0]!.reason).toMatch(/^timestamp \d{4}-\d\d-\d\dT[\d:.]+Z is more than 10 years in the past \(accepted: .+ to .+; STRATA_TIME_MAX_PAST\)$/);
    expect(rejected[1]!.reason).toMatch(/is more than 1 day in the future \(accepted: .+; STRATA_TIME_MAX_FUTURE\)$/);
    expect(rejected[3]!.reason).toMatch(/^timestamp 1900-01-01T00:00:00.000Z is more than 10 years in the past/);
    expect(await count(admin, `series_id IN (SELECT id FROM strata.series WHERE measurement = 'tw')`)).toBe(3);
    expect(await seriesNamed('tw_new')).toBe(0); // a refused line names no series
  });

  it('refuses a JSON metric outside the window by its index', async () => {
    const ms = Date.now();
    const r = await post(tw.url, '/v1/metrics', JSON.stringify({ metrics: [{ name: 'twj', fields: { v: 1 }, time: ms - 11 * YEAR_S * 1000 }, { name: 'twj', fields: { v: 2 }, time: ms }, { name: 'twj', fields: { v: 3 }, time: ms + 2 * 86_400_000 }] }), { Authorization: `Token ${site.token}` });
    expect(r.status).toBe(400);
    expect(r.body.written).toBe(1);
    expect((r.body.rejected as { index: number; reason: string }[]).map((x) => [x.index, /in the (past|future)/.exec(x.reason)?.[1]])).toEqual([
      [0, 'past'],
      [2, 'future'],
    ]);
  });
});
