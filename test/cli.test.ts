// The strata command line, driven as a user would: exit statuses, messages and output.
import { execFile } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { main } from '../src/cli.ts';
import { loadConfig } from '../src/config.ts';
import { openDb } from '../src/db/open.ts';
import { policyFromConfig } from '../src/jobs/policy.ts';
import { cluster, createDatabase } from './support/databases.ts';

async function strata(args: string[], env: NodeJS.ProcessEnv = {}) {
  const out: string[] = [];
  const err: string[] = [];
  const code = await main(args, { out: (t) => out.push(t), err: (t) => err.push(t), env });
  return { code, out: out.join('\n'), err: err.join('\n') };
}

describe('strata command line', () => {
  it('prints help and its version', async () => {
    const help = await strata(['--help']);
    expect(help.code).toBe(0);
    expect(help.out).toContain('facility add <code> --region <r>');
    const bare = await strata([]);
    expect(bare.code).toBe(64);
    const { stdout } = await promisify(execFile)(process.execPath, [join(import.meta.dirname, '../bin/strata.js'), '--version']);
    expect(stdout.trim()).toMatch(/^\d+\.\d+\.\d+$/);
  });

  it('rejects unknown commands and bad usage with status 64', async () => {
    expect(await strata(['frobnicate'])).toMatchObject({ code: 64, err: 'strata: unknown command "frobnicate"; run strata --help' });
    const env = { STRATA_ADMIN_DATABASE_URL: 'pglite:memory' };
    expect(await strata(['facility', 'add', 'p1'], env)).toMatchObject({ code: 64, err: expect.stringContaining('--region is required') });
    expect(await strata(['facility', 'add'], env)).toMatchObject({ code: 64, err: expect.stringContaining('usage: strata facility add <code>') });
    expect(await strata(['facility', 'retire'], env)).toMatchObject({ code: 64, err: expect.stringContaining('unknown subcommand "retire"; use add, list, grant, revoke, rotate-token, revoke-token, disable, enable or remove') });
    expect(await strata(['facility', 'list', '--bogus'], env)).toMatchObject({ code: 64, err: expect.stringContaining("Unknown option '--bogus'") });
    // Commands without options refuse one instead of ignoring it, before any configuration is checked.
    for (const command of ['dev', 'migrate', 'status', 'worker']) {
      expect(await strata([command, '--bogus'], {})).toMatchObject({ code: 64, err: `strata: strata ${command} takes no option "--bogus" (settings come from STRATA_* variables or --config <file>); usage: strata ${command}` });
    }
    expect(await strata(['migrate', 'now'], {})).toMatchObject({ code: 64, err: expect.stringContaining('strata migrate takes no argument "now"') });
    for (const command of ['serve', 'tier', 'archive', 'audit', 'size', 'spool']) {
      expect((await strata(command === 'tier' || command === 'archive' ? [command, 'plan', '--bogus'] : command === 'spool' ? [command, 'inspect', '/nonexistent', '--bogus'] : [command, '--bogus'], { STRATA_ADMIN_DATABASE_URL: 'pglite:memory' })).code).toBe(64);
    }
  });

  it('reports bad configuration with status 78 before opening any connection', async () => {
    let connections = 0;
    const server = createServer((s) => {
      connections++;
      s.destroy();
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as { port: number }).port;
    try {
      const r = await strata(['migrate'], {
        STRATA_ADMIN_DATABASE_URL: `postgres://admin:Sup3r-secret@127.0.0.1:${port}/m`,
        STRATA_CHUNK_INTERVAL: 'forever',
      });
      expect(r.code).toBe(78);
      expect(r.err).toContain('STRATA_CHUNK_INTERVAL="forever": must be a positive PostgreSQL interval');
      expect(r.err).not.toContain('Sup3r-secret');
      expect(connections).toBe(0);
    } finally {
      server.close();
    }
  });

  it('migrates with exactly the tablespaces the worker will use: the defaults named when missing, the configured ones granted', async () => {
    const t = await createDatabase(cluster().adminUrl(), 'strata_cli_ts');
    try {
      // Unset, the worker moves chunks into warm_data and cold_data: migrate checks those, before changing anything.
      const missing = await strata(['migrate'], { STRATA_ADMIN_DATABASE_URL: t.url });
      expect(missing.code).toBe(1);
      expect(missing.err).toContain('tablespace "warm_data" of the warm tier (STRATA_WARM_TABLESPACE) does not exist');
      expect(missing.err).toContain('tablespace "cold_data" of the cold tier (STRATA_COLD_TABLESPACE) does not exist');
      const db = await openDb(t.url);
      try {
        expect((await db.query(`SELECT 1 FROM pg_namespace WHERE nspname = 'strata'`)).rows).toEqual([]);
      } finally {
        await db.close();
      }
    } finally {
      await t.drop();
    }
    // Configured ones are granted to the maintainer (an embedded database makes them, as strata dev does).
    const dir = mkdtempSync(join(tmpdir(), 'strata-cli-ts-'));
    const env = { STRATA_ADMIN_DATABASE_URL: `pglite:${dir}`, STRATA_WARM_TABLESPACE: 'warm_fast', STRATA_COLD_TABLESPACE: 'cold_slow' };
    const ok = await strata(['migrate'], env);
    expect(ok.code, ok.err).toBe(0);
    const db = await openDb(`pglite:${dir}`);
    try {
      const granted = await db.query<{ name: string; ok: boolean }>(`SELECT spcname AS name, has_tablespace_privilege('strata_maintainer', spcname, 'CREATE') AS ok FROM pg_tablespace WHERE spcname IN ('warm_fast', 'cold_slow') ORDER BY 1`);
      expect(granted.rows).toEqual([{ name: 'cold_slow', ok: true }, { name: 'warm_fast', ok: true }]);
    } finally {
      await db.close();
    }
    const policy = policyFromConfig(loadConfig({ env }));
    expect([policy.warmTablespace, policy.coldTablespace]).toEqual(['warm_fast', 'cold_slow']);
  });

  it('says which setting a command needs', async () => {
    const r = await strata(['migrate'], {});
    expect(r).toMatchObject({ code: 78, err: expect.stringContaining('STRATA_ADMIN_DATABASE_URL is required for strata migrate (a direct connection') });
  });

  it('reports an unreachable database without its password', async () => {
    const r = await strata(['facility', 'list'], { STRATA_ADMIN_DATABASE_URL: 'postgres://admin:Sup3r-secret@127.0.0.1:1/m' });
    expect(r.code).toBe(1);
    expect(r.err).toContain('strata: cannot connect to postgres://admin:***@127.0.0.1:1/m');
    expect(r.err).not.toContain('Sup3r-secret');
  });

  it('migrates, adds and lists facilities on an embedded database directory', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'strata-cli-'));
    const env = { STRATA_ADMIN_DATABASE_URL: `pglite:${dir}/db`, STRATA_LOG_LEVEL: 'warn' };
    const m = await strata(['migrate'], env);
    expect(m.code).toBe(0);
    expect(m.out).toMatch(/^applied 10 migrations: 0001_roles, /);
    expect((await strata(['migrate'], env)).out).toMatch(/^schema up to date \(10 migrations applied earlier\)/);

    const add = await strata(['facility', 'add', 'press-01', '--region', 'eu-west-1', '--name', 'Press shop'], env);
    expect(add.code).toBe(0);
    const token = /ingest token: +(stk_\S+)/.exec(add.out)?.[1];
    expect(token).toBeDefined();
    expect(add.out).toContain('reader login:    strata_reader_press_01');

    const again = await strata(['facility', 'add', 'press-01', '--region', 'eu-west-1'], env);
    expect(again).toMatchObject({ code: 65, err: 'strata: facility "press-01" already exists (id 1)' });

    const list = await strata(['facility', 'list'], env);
    expect(list.code).toBe(0);
    expect(list.out.split('\n')[0]).toMatch(/^ID +CODE +REGION +NAME +READER ROLE +SERIES +STATE +CREATED$/);
    expect(list.out).toMatch(/1 +press-01 +eu-west-1 +Press shop +strata_reader_press_01 +0 +active +\d{4}-/);
    expect(list.out).not.toContain(token!);
    const json = JSON.parse((await strata(['facility', 'list', '--json'], env)).out);
    expect(json).toEqual([expect.objectContaining({ id: 1, code: 'press-01', region: 'eu-west-1', name: 'Press shop' })]);
    expect(JSON.stringify(json)).not.toContain(token!);

    const status = await strata(['status'], env);
    expect(status.out).toContain('compression:  segmentby facility_id, series_id; orderby time');
    expect(status.out).toContain('facilities:   1, series: 0');
  });
});
