// Configuration: every error path names its setting and reason; credentials never appear.
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { listenAddress, loadConfig, requireSetting } from '../src/config.ts';
import { ConfigError } from '../src/errors.ts';

function problems(fn: () => unknown): string[] {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return [...(err as ConfigError).problems];
  }
  throw new Error('expected a ConfigError');
}

function file(content: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'strata-config-'));
  const path = join(dir, 'strata.json');
  writeFileSync(path, content);
  return path;
}

describe('configuration', () => {
  it('has defaults for everything but the connections and region', () => {
    expect(loadConfig({ env: {} })).toEqual({
      chunkInterval: '1 hour',
      logLevel: 'info',
      devDir: '.strata',
      listen: '0.0.0.0:8086',
      spoolMaxBytes: 8 * 1024 ** 3,
      maxQueueBytes: 256 * 1024 ** 2,
      maxBodyBytes: 32 * 1024 ** 2,
      batchRows: 20_000,
      batchAgeMs: 100,
      writers: 4,
      ingestMode: 'columnstore',
      writeTimeoutMs: 1_500,
      writeAttempts: 3,
      seriesLimit: 100_000,
      seriesKeyMaxBytes: 2_048,
      lineMaxBytes: 1_048_576,
      timeMaxPast: '10 years',
      timeMaxFuture: '1 day',
      ledgerRetention: '2 days',
      tierWarmAfter: '30 days',
      tierColdAfter: '180 days',
      archiveAfter: '18 months',
      tierSchedule: '17 * * * *',
      tierLockTimeoutMs: 5_000,
      tlsMinVersion: '1.3',
      tlsAllowPlain: false,
      warmTablespace: 'warm_data',
      coldTablespace: 'cold_data',
      workerListen: '127.0.0.1:9465',
      tierColdMerge: '1 day',
      tierHotCompactAfter: '1 hour',
      archivePrefix: 'strata',
      archiveStorageClass: 'GLACIER',
      archiveObjectLock: 'off',
      archiveRetention: '7 years',
      archiveRestoreTier: 'Standard',
      archiveRestoreDays: 7,
      devS3Listen: '127.0.0.1:4568',
    });
  });

  it('reads STRATA_* variables', () => {
    const c = loadConfig({
      env: {
        STRATA_DATABASE_URL: 'postgres://gw:pw@bouncer:6432/metrics',
        STRATA_ADMIN_DATABASE_URL: 'postgresql://admin@primary/metrics',
        STRATA_REGION: 'eu-west-1',
        STRATA_CHUNK_INTERVAL: '30 minutes',
        STRATA_WARM_TABLESPACE: 'warm_data',
        STRATA_COLD_TABLESPACE: 'cold_data',
        STRATA_LOG_LEVEL: 'debug',
        STRATA_DEV_DIR: '/tmp/x',
        STRATA_LISTEN: '127.0.0.1:9000',
        STRATA_SPOOL_DIR: '/var/lib/strata/spool',
        STRATA_SPOOL_MAX_BYTES: '2147483648',
        STRATA_MAX_QUEUE_BYTES: '67108864',
        STRATA_MAX_BODY_BYTES: '1048576',
        STRATA_BATCH_ROWS: '20000',
        STRATA_BATCH_AGE_MS: '50',
        STRATA_WRITERS: '8',
        STRATA_INGEST_MODE: 'rowstore',
        STRATA_WRITE_TIMEOUT_MS: '3000',
        STRATA_WRITE_ATTEMPTS: '5',
        STRATA_SERIES_LIMIT: '500',
        STRATA_SERIES_KEY_MAX_BYTES: '1000',
        STRATA_LINE_MAX_BYTES: '65536',
        STRATA_TIME_MAX_PAST: '20 years',
        STRATA_TIME_MAX_FUTURE: '0 hours',
        STRATA_LEDGER_RETENTION: '2 days',
        STRATA_TIER_WARM_AFTER: '2 weeks',
        STRATA_TIER_COLD_AFTER: '6 months',
        STRATA_ARCHIVE_AFTER: '2 years',
        STRATA_TIER_COLD_MERGE: '12 hours',
        STRATA_TIER_HOT_COMPACT_AFTER: 'off',
        STRATA_TIER_WINDOW: '01:00-05:00',
        STRATA_TIER_SCHEDULE: '*/10 * * * *',
        STRATA_TIER_LOCK_TIMEOUT_MS: '2000',
        STRATA_WORKER_LISTEN: '9465',
        STRATA_ARCHIVE_BUCKETS: 'eu-west-1=strata-eu, us-east-1=strata.us',
        STRATA_ARCHIVE_PREFIX: 'archive/v1',
        STRATA_ARCHIVE_STORAGE_CLASS: 'DEEP_ARCHIVE',
        STRATA_ARCHIVE_OBJECT_LOCK: 'COMPLIANCE',
        STRATA_ARCHIVE_RETENTION: '10 years',
        STRATA_ARCHIVE_RESTORE_TIER: 'Bulk',
        STRATA_ARCHIVE_RESTORE_DAYS: '3',
        STRATA_ARCHIVE_WORK_DIR: '/var/tmp/strata',
        STRATA_S3_ENDPOINT: 'http://127.0.0.1:9000',
        STRATA_DEV_S3_LISTEN: '4600',
      },
    });
    expect(c).toEqual({
      listen: '127.0.0.1:9000',
      spoolDir: '/var/lib/strata/spool',
      spoolMaxBytes: 2_147_483_648,
      maxQueueBytes: 67_108_864,
      maxBodyBytes: 1_048_576,
      batchRows: 20_000,
      batchAgeMs: 50,
      writers: 8,
      ingestMode: 'rowstore',
      writeTimeoutMs: 3_000,
      writeAttempts: 5,
      seriesLimit: 500,
      seriesKeyMaxBytes: 1_000,
      lineMaxBytes: 65_536,
      timeMaxPast: '20 years',
      timeMaxFuture: '0 hours',
      ledgerRetention: '2 days',
      tierWarmAfter: '2 weeks',
      tierColdAfter: '6 months',
      archiveAfter: '2 years',
      tierColdMerge: '12 hours',
      tierHotCompactAfter: 'off',
      tierWindow: '01:00-05:00',
      tierSchedule: '*/10 * * * *',
      tierLockTimeoutMs: 2_000,
      tlsMinVersion: '1.3',
      tlsAllowPlain: false,
      workerListen: '9465',
      archiveBuckets: 'eu-west-1=strata-eu, us-east-1=strata.us',
      archivePrefix: 'archive/v1',
      archiveStorageClass: 'DEEP_ARCHIVE',
      archiveObjectLock: 'COMPLIANCE',
      archiveRetention: '10 years',
      archiveRestoreTier: 'Bulk',
      archiveRestoreDays: 3,
      archiveWorkDir: '/var/tmp/strata',
      s3Endpoint: 'http://127.0.0.1:9000',
      devS3Listen: '4600',
      databaseUrl: 'postgres://gw:pw@bouncer:6432/metrics',
      adminDatabaseUrl: 'postgresql://admin@primary/metrics',
      region: 'eu-west-1',
      chunkInterval: '30 minutes',
      warmTablespace: 'warm_data',
      coldTablespace: 'cold_data',
      logLevel: 'debug',
      devDir: '/tmp/x',
    });
  });

  it('names each bad time-window setting with its reason', () => {
    const bad = () => loadConfig({ env: { STRATA_TIME_MAX_PAST: '0 years', STRATA_TIME_MAX_FUTURE: 'tomorrow' } });
    expect(bad).toThrow(/STRATA_TIME_MAX_PAST="0 years": must be a whole number of seconds, minutes, hours, days, weeks, months or years \(at least 1\)/);
    expect(bad).toThrow(/STRATA_TIME_MAX_FUTURE="tomorrow": must be a whole number of seconds, minutes, hours, days, weeks, months or years, such as/);
  });

  it('names a bad tier compaction or merge setting with its reason', () => {
    const bad = () => loadConfig({ env: { STRATA_TIER_HOT_COMPACT_AFTER: '30 minutes', STRATA_TIER_COLD_MERGE: 'weekly' } });
    expect(bad).toThrow(/STRATA_TIER_HOT_COMPACT_AFTER="30 minutes": must be a whole number of hours or days, such as "1 hour", or "off"/);
    expect(bad).toThrow(/STRATA_TIER_COLD_MERGE="weekly": must be a whole number of hours or days, such as "1 day", or "off"/);
  });

  it('names each bad archive setting with its reason', () => {
    const bad = () =>
      loadConfig({ env: { STRATA_ARCHIVE_BUCKETS: 'eu-west-1:strata-eu', STRATA_ARCHIVE_OBJECT_LOCK: 'forever', STRATA_ARCHIVE_RETENTION: '7 eons', STRATA_ARCHIVE_RESTORE_DAYS: '0', STRATA_S3_ENDPOINT: 's3.amazonaws.com' } });
    expect(bad).toThrow(/STRATA_ARCHIVE_BUCKETS="eu-west-1:strata-eu": must list region=bucket pairs/);
    expect(bad).toThrow(/STRATA_ARCHIVE_OBJECT_LOCK="forever": Invalid option: expected one of "off"\|"GOVERNANCE"\|"COMPLIANCE"/);
    expect(bad).toThrow(/STRATA_ARCHIVE_RETENTION="7 eons": must be a whole number of days, weeks, months or years/);
    expect(bad).toThrow(/STRATA_ARCHIVE_RESTORE_DAYS="0": must be at least 1/);
    expect(bad).toThrow(/STRATA_S3_ENDPOINT="s3.amazonaws.com": must be an http:\/\/ or https:\/\/ URL/);
  });

  it('names each bad gateway setting with its reason', () => {
    const err = (() => {
      try {
        loadConfig({ env: { STRATA_LISTEN: 'localhost:99999', STRATA_BATCH_ROWS: 'lots', STRATA_WRITERS: '0', STRATA_MAX_BODY_BYTES: '1.5', STRATA_LEDGER_RETENTION: 'forever', STRATA_SERIES_KEY_MAX_BYTES: '4000' } });
      } catch (e) {
        return e as ConfigError;
      }
      throw new Error('expected a ConfigError');
    })();
    expect(err.problems).toEqual(
      expect.arrayContaining([
        'STRATA_LISTEN="localhost:99999": must be [host:]port with a port up to 65535, such as "0.0.0.0:8086" or "8086"',
        'STRATA_BATCH_ROWS="lots": must be a whole number',
        'STRATA_WRITERS="0": must be at least 1',
        'STRATA_MAX_BODY_BYTES="1.5": must be a whole number',
        expect.stringMatching(/^STRATA_LEDGER_RETENTION="forever": must be a positive PostgreSQL interval/),
        'STRATA_SERIES_KEY_MAX_BYTES="4000": must be at most 2600 (a series index row holds at most 2704 bytes)',
      ]),
    );
    expect(err.problems).toHaveLength(6);
    expect(listenAddress('8086')).toEqual({ host: '0.0.0.0', port: 8086 });
    expect(listenAddress('[::1]:9000')).toEqual({ host: '::1', port: 9000 });
  });

  it('refuses a queue smaller than the largest accepted body', () => {
    expect(() => loadConfig({ env: { STRATA_MAX_QUEUE_BYTES: String(2 << 20), STRATA_MAX_BODY_BYTES: String(4 << 20) } })).toThrow(
      /STRATA_MAX_QUEUE_BYTES="2097152": must be at least STRATA_MAX_BODY_BYTES/,
    );
  });

  it('takes a JSON file, with environment variables overriding it', () => {
    const path = file(JSON.stringify({ region: 'us-east-1', chunkInterval: '1 day', adminDatabaseUrl: 'pglite:/tmp/db' }));
    const c = loadConfig({ env: { STRATA_REGION: 'eu-west-1' }, file: path });
    expect(c.region).toBe('eu-west-1');
    expect(c.chunkInterval).toBe('1 day');
    expect(c.adminDatabaseUrl).toBe('pglite:/tmp/db');
  });

  it('reports every bad variable at once, by name and reason, with passwords masked', () => {
    const p = problems(() =>
      loadConfig({
        env: {
          STRATA_DATABASE_URL: 'mysql://gw:hunter22@db/metrics',
          STRATA_ADMIN_DATABASE_URL: 'postgres://admin:hunter33@/',
          STRATA_REGION: 'EU West',
          STRATA_CHUNK_INTERVAL: '0 hours',
          STRATA_WARM_TABLESPACE: 'Warm-Data',
          STRATA_COLD_TABLESPACE: 'x'.repeat(64),
          STRATA_LOG_LEVEL: 'loud',
        },
      }),
    );
    expect(p).toHaveLength(7);
    expect(p[0]).toBe('STRATA_DATABASE_URL="mysql://gw:***@db/metrics": must be a postgres:// or postgresql:// URL naming a host and a database, or pglite:<directory> or pglite:memory');
    expect(p[1]).toMatch(/^STRATA_ADMIN_DATABASE_URL="postgres:\/\/admin:\*\*\*@\/": must be a postgres:\/\//);
    expect(p[2]).toBe('STRATA_REGION="EU West": must be lowercase letters, digits and hyphens, such as "eu-west-1"');
    expect(p[3]).toBe('STRATA_CHUNK_INTERVAL="0 hours": must be a positive PostgreSQL interval of whole units, such as "1 hour", "30 minutes" or "1 day"');
    expect(p[4]).toMatch(/^STRATA_WARM_TABLESPACE="Warm-Data": must be a lowercase PostgreSQL identifier/);
    expect(p[5]).toMatch(/^STRATA_COLD_TABLESPACE="x{64}": must be a lowercase PostgreSQL identifier/);
    expect(p[6]).toMatch(/^STRATA_LOG_LEVEL="loud": Invalid option: expected one of "debug"\|"info"\|"warn"\|"error"/);
    expect(p.join('\n')).not.toMatch(/hunter22|hunter33/);
  });

  it.each([
    ['1 fortnight'],
    ['1.5 hours'],
    ['hour'],
    ['1 hour; DROP TABLE x'],
  ])('rejects the chunk interval %j', (value) => {
    const [p] = problems(() => loadConfig({ env: { STRATA_CHUNK_INTERVAL: value } }));
    expect(p).toContain(`STRATA_CHUNK_INTERVAL=${JSON.stringify(value)}: must be a positive PostgreSQL interval`);
  });

  it('names the file and key of a bad value from the config file', () => {
    const path = file(JSON.stringify({ chunkInterval: 5 }));
    const [p] = problems(() => loadConfig({ env: {}, file: path }));
    expect(p).toMatch(new RegExp(`^${path.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}: "chunkInterval"=5: `));
  });

  it('names unknown keys in the config file', () => {
    const path = file(JSON.stringify({ regoin: 'eu-west-1' }));
    const [p] = problems(() => loadConfig({ env: {}, file: path }));
    expect(p).toMatch(/unknown setting "regoin" \(known: databaseUrl, adminDatabaseUrl, notifyDatabaseUrl, metricsToken, tlsCert, tlsKey, tlsCa, tlsMinVersion, tlsAllowPlain, region,/);
  });

  it('reports a config file that is missing, not JSON, or not an object', () => {
    expect(problems(() => loadConfig({ env: {}, file: '/nonexistent/strata.json' }))).toEqual(['config file /nonexistent/strata.json: cannot be read (ENOENT)']);
    const bad = file('{"region": ');
    expect(problems(() => loadConfig({ env: {}, file: bad }))[0]).toMatch(new RegExp(`^config file ${bad}: not valid JSON \\(`));
    const arr = file('[1, 2]');
    expect(problems(() => loadConfig({ env: {}, file: arr }))).toEqual([`config file ${arr}: must hold a JSON object of settings`]);
  });

  it('masks a password from a config file even where it appears without its URL', () => {
    const path = file(JSON.stringify({ databaseUrl: 'postgres://gw:Zq9-unique-pw@h/db', region: 'Bad Region Zq9-unique-pw' }));
    const p = problems(() => loadConfig({ env: {}, file: path }));
    expect(p.join('\n')).not.toContain('Zq9-unique-pw');
    expect(p[0]).toContain('"region"="Bad Region ***"');
  });

  it('masks a password holding "/" or "@", and never prints a non-string URL setting', () => {
    const [p] = problems(() => loadConfig({ env: { STRATA_DATABASE_URL: 'postgres://gw:pa/ss@w0rd@host/db', STRATA_REGION: 'Bad' } }).region);
    expect(p).toBeDefined();
    const path = file(JSON.stringify({ databaseUrl: { password: 'Obj3ct-pw' } }));
    const q = problems(() => loadConfig({ env: { STRATA_ADMIN_DATABASE_URL: 'mysql://gw:pa/ss@w0rd@host/db' }, file: path }));
    const text = q.join('\n');
    expect(text).not.toContain('pa/ss');
    expect(text).not.toContain('w0rd');
    expect(text).not.toContain('Obj3ct-pw');
    expect(text).toContain('STRATA_ADMIN_DATABASE_URL="mysql://gw:***@host/db"');
    expect(text).toContain('"databaseUrl"=(a object)');
  });

  it('says which setting a command needs', () => {
    const c = loadConfig({ env: {} });
    expect(problems(() => requireSetting(c, 'adminDatabaseUrl', 'for strata migrate'))).toEqual(['STRATA_ADMIN_DATABASE_URL is required for strata migrate']);
  });
});
