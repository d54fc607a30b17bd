// A facility's life after `add`, on native PostgreSQL with two running gateways: rotation (the new
// token at once, the old one for its grace period only), revocation, disable/enable, removal with
// and without data, every change heard by both gateways through LISTEN/NOTIFY (their periodic
// refresh is set to an hour here, so nothing else can explain it), and the audit trail of it all.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { main } from '../src/cli.ts';
import { openDb } from '../src/db/open.ts';
import type { Db } from '../src/db/port.ts';
import { listAudit } from '../src/facilities/audit.ts';
import { removeFacility, revokeToken, rotateToken, setDisabled } from '../src/facilities/lifecycle.ts';
import type { Gateway } from '../src/ingest/gateway.ts';
import type { Logger } from '../src/log.ts';
import { cluster, createDatabase, uniqueName, type TestDatabase } from './support/databases.ts';
import { facility, gateway, plainSchema, post } from './support/gateway.ts';
import { until } from './support/wait.ts';

const HOUR = 3_600_000;
let t: TestDatabase;
let admin: Db;
const pools: Db[] = [];
const gws: Gateway[] = [];
const tag = uniqueName('l').slice(2);

const line = (n: number) => `m,site=s v=${n} ${Date.now() - 60_000 + n}\n`;
const write = (gw: Gateway, token: string, n = 1) => post(gw.url, '/api/v2/write?precision=ms', line(n), { Authorization: `Token ${token}` });
const statuses = async (token: string) => Promise.all(gws.map(async (gw) => (await write(gw, token)).status));

async function strata(args: string[]) {
  const out: string[] = [];
  const err: string[] = [];
  const code = await main(args, { out: (s) => out.push(s), err: (s) => err.push(s), env: { STRATA_ADMIN_DATABASE_URL: t.url, STRATA_LOG_LEVEL: 'error' } });
  return { code, out: out.join('\n'), err: err.join('\n') };
}

/** Waits until both gateways answer `want` for the token; returns how long the change took to reach them. */
async function reached(token: string, want: number, since: number): Promise<number> {
  await until(`both gateways answering ${want}`, async () => (await statuses(token)).every((s) => s === want));
  return Date.now() - since;
}

beforeAll(async () => {
  t = await createDatabase(cluster().adminUrl(), 'strata_lifecycle');
  admin = await openDb(t.url);
  await plainSchema(admin);
  for (let i = 0; i < 2; i++) {
    const db = await openDb(t.url, { max: 4 });
    pools.push(db);
    gws.push(await gateway(db, { facilityRefreshMs: HOUR }));
  }
  await until('both gateways listening for facility changes', async () => gws.every((g) => g.facilities.listening));
});

afterAll(async () => {
  for (const g of gws) await g.stop();
  for (const p of pools) await p.close();
  await admin?.close();
  await t?.drop();
});

describe('token lifecycle with two running gateways', () => {
  it('rotates: the new token works at once on both, the old one until its grace period ends, then is refused', async () => {
    const f = await facility(admin, `rot-${tag}`);
    expect(await reached(f.token, 204, Date.now())).toBeGreaterThanOrEqual(0);
    const heard = gws.map((g) => g.facilities.changesHeard);
    const r = await rotateToken(admin, `rot-${tag}`, 3_000);
    const rotatedAt = Date.now();
    expect(r.token).not.toBe(f.token);
    expect(r.previousValidUntil!.getTime()).toBeGreaterThan(rotatedAt);
    await reached(r.token, 204, rotatedAt);
    // Both heard the change by notification (their periodic refresh is an hour away).
    gws.forEach((g, i) => expect(g.facilities.changesHeard).toBeGreaterThan(heard[i]!));
    // The old token: accepted until the grace period ends, refused after it, by every gateway.
    if (Date.now() < r.previousValidUntil!.getTime() - 500) expect(await statuses(f.token)).toEqual([204, 204]);
    await reached(f.token, 401, rotatedAt);
    expect(Date.now()).toBeGreaterThanOrEqual(r.previousValidUntil!.getTime() - 50);
    expect(await statuses(r.token)).toEqual([204, 204]);
  });

  it('rotates without grace and revokes: the replaced token is refused as soon as the change is heard', async () => {
    const f = await facility(admin, `rev-${tag}`);
    await reached(f.token, 204, Date.now());
    const heard = gws.map((g) => g.facilities.changesHeard);
    const r = await rotateToken(admin, `rev-${tag}`);
    expect(r.previousValidUntil).toBeNull();
    const ms = await reached(f.token, 401, Date.now());
    gws.forEach((g, i) => expect(g.facilities.changesHeard).toBeGreaterThan(heard[i]!));
    console.log(`rotation without grace reached both gateways in ${ms} ms`);
    expect(await statuses(r.token)).toEqual([204, 204]);
    expect(await revokeToken(admin, `rev-${tag}`)).toEqual({ changed: true });
    const revokedMs = await reached(r.token, 401, Date.now());
    console.log(`revocation reached both gateways in ${revokedMs} ms`);
    expect((await write(gws[0]!, r.token)).body.message).toMatch(/^unknown ingest token \(revoked, replaced by a rotation, or never issued\)/);
    expect(await revokeToken(admin, `rev-${tag}`)).toEqual({ changed: false });
  });

  it('hears a token changed by hand in the table too (the trigger notifies any change)', async () => {
    const f = await facility(admin, `hand-${tag}`);
    await reached(f.token, 204, Date.now());
    await admin.query(`UPDATE strata.facilities SET token_hash = sha256('something else'::bytea) WHERE code = $1`, [`hand-${tag}`]);
    await reached(f.token, 401, Date.now());
  });

  it('disables (403 with what to do) and enables a facility; its token and rows are untouched', async () => {
    const f = await facility(admin, `dis-${tag}`);
    await reached(f.token, 204, Date.now());
    expect(await setDisabled(admin, `dis-${tag}`, true)).toEqual({ changed: true });
    await reached(f.token, 403, Date.now());
    const refused = await write(gws[1]!, f.token);
    expect(refused.body.message).toMatch(new RegExp(`^facility dis-${tag} is disabled \\(since .*\\): its writes are refused until an operator runs strata facility enable dis-${tag}$`));
    expect(await setDisabled(admin, `dis-${tag}`, true)).toEqual({ changed: false });
    expect(await setDisabled(admin, `dis-${tag}`, false)).toEqual({ changed: true });
    await reached(f.token, 204, Date.now());
  });

  it('picks up the changes made while its listening connection was cut, and listens again', async () => {
    const f = await facility(admin, `cut-${tag}`);
    await reached(f.token, 204, Date.now());
    // Cut both gateways' listening sessions; revoke while they may still be reconnecting.
    await admin.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'strata listen'`);
    await revokeToken(admin, `cut-${tag}`);
    await reached(f.token, 401, Date.now());
    await until('both gateways listening again', async () => gws.every((g) => g.facilities.listening));
  });
});

describe('where the gateway listens', () => {
  function recording(lines: string[]): Logger {
    const log: Logger = { debug: () => {}, info: () => {}, warn: (msg: string) => void lines.push(msg), error: (msg: string) => void lines.push(msg), child: () => log } as unknown as Logger;
    return log;
  }

  it('says so when notifications do not come back through PgBouncer in transaction mode, and hears them on STRATA_NOTIFY_DATABASE_URL', async () => {
    const said: string[] = [];
    const through = await openDb(cluster().bouncerUrl(t.name), { max: 2 });
    const gw = await gateway(through, { facilityRefreshMs: HOUR }, recording(said));
    try {
      await until('the warning about notifications through PgBouncer', () => said.some((m) => m.startsWith('facility change notifications do not arrive on the listening connection')));
      expect(said.find((m) => m.startsWith('facility change notifications'))).toContain('set STRATA_NOTIFY_DATABASE_URL to a direct connection');
      expect(gw.facilities.listening).toBe(false);
    } finally {
      await gw.stop();
      await through.close();
    }
    const direct = await openDb(cluster().bouncerUrl(t.name), { max: 2, listenUrl: t.url });
    const gw2 = await gateway(direct, { facilityRefreshMs: HOUR });
    try {
      await until('the gateway listening on the direct connection', () => gw2.facilities.listening);
      const f = await facility(admin, `bnc-${tag}`);
      await until('the new facility accepted', async () => (await write(gw2, f.token)).status === 204);
      await revokeToken(admin, `bnc-${tag}`);
      await until('the revoked token refused', async () => (await write(gw2, f.token)).status === 401);
      expect(gw2.facilities.changesHeard).toBeGreaterThan(0);
    } finally {
      await gw2.stop();
      await direct.close();
    }
  });
});

describe('removing a facility', () => {
  const role = async (code: string) => (await admin.query('SELECT 1 FROM pg_roles WHERE rolname = $1', [`strata_reader_${code.replace(/-/g, '_')}`])).rows.length === 1;

  it('deletes one without data, with its reader role; its token stops working', async () => {
    const code = `empty-${tag}`;
    const f = await facility(admin, code);
    expect(await role(code)).toBe(true);
    expect(await removeFacility(admin, code)).toMatchObject({ outcome: 'deleted', series: 0 });
    expect(await role(code)).toBe(false);
    expect((await admin.query('SELECT 1 FROM strata.facilities WHERE code = $1', [code])).rows).toEqual([]);
    await reached(f.token, 401, Date.now());
  });

  it('refuses one with data, saying what to do; --keep-data retires it, rows kept, reader role gone', async () => {
    const code = `kept-${tag}`;
    const f = await facility(admin, code);
    await reached(f.token, 204, Date.now());
    const rows = async () => (await admin.query<{ n: number }>('SELECT count(*)::int AS n FROM strata.metrics WHERE facility_id = $1', [f.id])).rows[0]!.n;
    await until('the rows written', async () => (await rows()) > 0);
    const before = await rows();
    await expect(removeFacility(admin, code)).rejects.toThrow(`facility "${code}" still has data (1 series with rows): rerun with --keep-data to retire it with its rows kept (no token, no reader, no writes), or with --delete-data to delete its rows too (archived chunks in S3 are not touched)`);
    expect(await role(code)).toBe(true);
    expect(await removeFacility(admin, code, { keepData: true })).toMatchObject({ outcome: 'retired', series: 1, rows: null });
    expect(await role(code)).toBe(false);
    expect(await rows()).toBe(before);
    await reached(f.token, 401, Date.now());
    await expect(rotateToken(admin, code)).rejects.toThrow(new RegExp(`^cannot rotate the token of "${code}": facility "${code}" was removed on .* \\(its rows were kept\\); it takes no writes$`));
  });

  it('--delete-data deletes its rows and series and nothing of another facility', async () => {
    const code = `gone-${tag}`;
    const f = await facility(admin, code);
    const other = await facility(admin, `stay-${tag}`);
    await reached(f.token, 204, Date.now());
    await reached(other.token, 204, Date.now());
    const count = async (id: number) => (await admin.query<{ n: number }>('SELECT count(*)::int AS n FROM strata.metrics WHERE facility_id = $1', [id])).rows[0]!.n;
    const otherRows = await count(other.id);
    const r = await removeFacility(admin, code, { deleteData: true });
    expect(r).toMatchObject({ outcome: 'deleted', series: 1 });
    expect(r.rows).toBeGreaterThan(0);
    expect(await count(f.id)).toBe(0);
    expect((await admin.query('SELECT 1 FROM strata.series WHERE facility_id = $1', [f.id])).rows).toEqual([]);
    expect(await count(other.id)).toBe(otherRows);
    expect(await role(code)).toBe(false);
  });
});

describe('the commands and the audit trail', () => {
  it('rotate-token, revoke-token, disable, enable, remove from the command line, each recorded with role, OS user and time', async () => {
    const code = `cli-${tag}`;
    const since = new Date();
    expect(await strata(['facility', 'add', code, '--region', 'test-1'])).toMatchObject({ code: 0 });
    const rotated = await strata(['facility', 'rotate-token', code, '--grace', '10m']);
    expect(rotated).toMatchObject({ code: 0, out: expect.stringMatching(/new ingest token: stk_[A-Za-z0-9_-]{43}\nThe previous token keeps working until \d{4}-/) });
    expect(await strata(['facility', 'rotate-token', code, '--grace', 'soon'])).toMatchObject({ code: 64, err: 'strata: strata facility rotate-token --grace "soon": not a duration; give one such as 10m, 1h30m or 90s' });
    expect((await strata(['facility', 'list'])).out).toMatch(new RegExp(`${code} .* active \\(old token until \\d{4}-`));
    expect(await strata(['facility', 'disable', code])).toMatchObject({ code: 0, out: `facility ${code} disabled: its writes are refused (403) until strata facility enable ${code}` });
    expect((await strata(['facility', 'list'])).out).toMatch(new RegExp(`${code} .* disabled`));
    expect(await strata(['facility', 'enable', code])).toMatchObject({ code: 0 });
    expect(await strata(['facility', 'revoke-token', code])).toMatchObject({ code: 0 });
    expect((await strata(['facility', 'list'])).out).toMatch(new RegExp(`${code} .* no token`));
    expect(await strata(['facility', 'remove', code])).toMatchObject({ code: 0, out: `facility ${code} removed with reader role strata_reader_${code.replace(/-/g, '_')}` });
    expect(await strata(['facility', 'remove', code])).toMatchObject({ code: 65, err: `strata: cannot remove "${code}": no facility "${code}" (see strata facility list)` });
    expect(await strata(['facility', 'remove', 'x', '--keep-data', '--delete-data'])).toMatchObject({ code: 64, err: 'strata: choose one of --keep-data and --delete-data' });

    const entries = await listAudit(admin, { since, facility: code });
    expect(entries.map((e) => e.action)).toEqual(['facility.add', 'token.rotate', 'facility.disable', 'facility.enable', 'token.revoke', 'facility.remove']);
    const dbRole = (await admin.query<{ u: string }>('SELECT session_user AS u')).rows[0]!.u;
    for (const e of entries) {
      expect(e).toMatchObject({ dbRole, osUser: expect.any(String), facility: code });
      expect(e.at.getTime()).toBeGreaterThanOrEqual(since.getTime() - 5_000);
    }
    expect(entries[1]!.details).toMatchObject({ graceSeconds: 600 });
    const shown = await strata(['audit', '--since', '1h', '--facility', code]);
    expect(shown.code).toBe(0);
    expect(shown.out.split('\n')[0]).toMatch(/^AT +DB ROLE +OS USER +ACTION +FACILITY +DETAILS$/);
    expect(shown.out).toContain('token.rotate');
    expect(await strata(['audit', '--since', 'yesterday-ish'])).toMatchObject({ code: 64, err: expect.stringContaining('--since "yesterday-ish" is neither a time') });
  });

  it('keeps the audit log from the roles that only read it', async () => {
    await admin.exec(`CREATE ROLE auditor_${tag} IN ROLE strata_maintainer`);
    try {
      const denied = admin.transaction(async (tx) => {
        await tx.exec(`SET LOCAL ROLE auditor_${tag}`);
        await tx.query('SELECT count(*) FROM strata.audit_log');
        await tx.query(`DELETE FROM strata.audit_log`);
      });
      await expect(denied).rejects.toThrow(/permission denied for table audit_log/);
    } finally {
      await admin.exec(`DROP ROLE auditor_${tag}`);
    }
  });
});
