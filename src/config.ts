// Configuration: one zod schema over environment variables and an optional JSON file.
// Validation does no I/O beyond reading the file; connections are opened later, by the commands.
// Ground floor: imports only errors.ts, patterns.ts, redact.ts and units.ts.
import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { ConfigError } from './errors.ts';
import { redact, redactUrl, registerSecret } from './redact.ts';
import { parseSpan } from './units.ts';
import { IDENTIFIER, REGION } from './patterns.ts';

const INTERVAL = /^\s*(\d+)\s*(seconds?|minutes?|hours?|days?|weeks?)\s*$/i;
/** "N hours", "N days" or "off" (the cold merge unit, the hot compaction age). */
export const HOURS_OR_DAYS = /^\s*(?:(\d+)\s*(hours?|days?)|off)\s*$/i;

/**
 * The tier policy's defaults, here once: the settings below and src/jobs/policy.ts (and through it
 * the worker, `strata tier` and `strata migrate`, which checks and grants these tablespaces) use them.
 */
export const TIER_DEFAULTS = {
  tierWarmAfter: '30 days',
  tierColdAfter: '180 days',
  archiveAfter: '18 months',
  tierColdMerge: '1 day',
  tierHotCompactAfter: '1 hour',
  warmTablespace: 'warm_data',
  coldTablespace: 'cold_data',
} as const;

/** Accepts postgres:// and postgresql:// URLs, and pglite:<dir> / pglite:memory for the embedded database. */
function isDatabaseUrl(value: string): boolean {
  if (/^pglite:/.test(value)) return value.length > 'pglite:'.length;
  try {
    const u = new URL(value);
    return (u.protocol === 'postgres:' || u.protocol === 'postgresql:') && u.hostname !== '' && u.pathname.length > 1;
  } catch {
    return false;
  }
}

const databaseUrl = z
  .string()
  .refine(isDatabaseUrl, 'must be a postgres:// or postgresql:// URL naming a host and a database, or pglite:<directory> or pglite:memory');

const interval = z
  .string()
  .refine(
    (v) => Number(INTERVAL.exec(v)?.[1]) > 0,
    'must be a positive PostgreSQL interval of whole units, such as "1 hour", "30 minutes" or "1 day"',
  );

/** An age of data as a PostgreSQL interval of whole days, weeks, months or years ("18 months"). */
export const AGE = /^\s*(\d+)\s*(days?|weeks?|months?|years?)\s*$/i;
export const age = z.string().regex(AGE, 'must be a whole number of days, weeks, months or years, such as "30 days" or "18 months"');
/** "N hours", "N days" or "off"; the default is also the example in the error. */
const hoursOrDays = (dflt: string) => z.string().regex(HOURS_OR_DAYS, `must be a whole number of hours or days, such as "${dflt}", or "off"`).default(dflt);
const BUCKET = '[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]';
const REGION_PART = REGION.source.slice(1, -1);
const BUCKETS = new RegExp(`^\\s*${REGION_PART}=${BUCKET}(\\s*,\\s*${REGION_PART}=${BUCKET})*\\s*$`);
const WINDOW = /^([01]\d|2[0-3]):[0-5]\d-([01]\d|2[0-3]):[0-5]\d$/;

const LISTEN = /^(?:([^\s:]+|\[[0-9a-f:]+\]):)?(\d{1,5})$/i;

const listen = (example: string) =>
  z.string().refine((v) => LISTEN.test(v) && Number(LISTEN.exec(v)![2]) <= 65_535, `must be [host:]port with a port up to 65535, such as ${example}`);

/** A whole number of at least `min`; environment variables arrive as text. */
const count = (min: number) => z.coerce.number({ error: 'must be a whole number' }).int('must be a whole number').min(min, `must be at least ${min}`);

/** A span of whole units, seconds to years ("10 years", "36 hours"), of at least `min` of them. */
const span = (min: number) =>
  z.string().refine((v) => (parseSpan(v) ?? -1) >= min, `must be a whole number of seconds, minutes, hours, days, weeks, months or years${min > 0 ? ' (at least 1)' : ''}, such as "10 years" or "1 day"`);

const tablespace = z.string().regex(IDENTIFIER, 'must be a lowercase PostgreSQL identifier ([a-z_][a-z0-9_]*, at most 63 characters)');

export const configSchema = z
  .object({
    databaseUrl: databaseUrl.optional(),
    adminDatabaseUrl: databaseUrl.optional(),
    /** A direct connection (not PgBouncer in transaction mode) on which the gateway hears facility changes; default: databaseUrl. */
    notifyDatabaseUrl: databaseUrl.optional(),
    /** The bearer token /metrics and /ready's details ask for (they name facilities and the database host). */
    metricsToken: z.string().regex(/^[\x21-\x7e]{16,200}$/, 'must be 16 to 200 printable characters without spaces (e.g. openssl rand -hex 24)').optional(),
    // TLS on the gateway (src/ingest/tls.ts): PEM files, read at start and again on SIGHUP.
    tlsCert: z.string().min(1).optional(),
    tlsKey: z.string().min(1).optional(),
    /** Clients must present a certificate this CA signed. */
    tlsCa: z.string().min(1).optional(),
    tlsMinVersion: z.enum(['1.2', '1.3'], { error: 'must be 1.3 (the default) or 1.2 (for collectors that cannot speak 1.3)' }).default('1.3'),
    /** Plain HTTP on the TLS port too; otherwise it is answered 400 and closed. */
    tlsAllowPlain: z.union([z.boolean(), z.stringbool()], { error: 'must be 1 or 0 (true or false)' }).default(false),
    region: z.string().regex(REGION, 'must be lowercase letters, digits and hyphens, such as "eu-west-1"').optional(),
    chunkInterval: interval.default('1 hour'),
    warmTablespace: tablespace.default(TIER_DEFAULTS.warmTablespace),
    coldTablespace: tablespace.default(TIER_DEFAULTS.coldTablespace),
    logLevel: z.enum(['debug', 'info', 'warn', 'error']).default('info'),
    devDir: z.string().min(1).default('.strata'),
    listen: listen('"0.0.0.0:8086" or "8086"').default('0.0.0.0:8086'),
    spoolDir: z.string().min(1).optional(),
    spoolMaxBytes: count(1 << 20).default(8 * 1024 ** 3),
    maxQueueBytes: count(1 << 20).default(256 * 1024 ** 2),
    maxBodyBytes: count(1024).default(32 * 1024 ** 2),
    batchRows: count(1).default(20_000),
    batchAgeMs: count(1).default(100),
    writers: count(1).default(4),
    // How the writer's COPY stores rows (src/ingest/ingest-mode.ts); columnstore falls back to the row store where the
    // database cannot. The default by measurement: README "Ingest mode".
    ingestMode: z.enum(['rowstore', 'columnstore']).default('columnstore'),
    // `strata serve`'s gateway processes on this host (src/serve-processes.ts); unset: the machine's cores.
    gatewayProcesses: count(1).max(1024, 'must be at most 1024').optional(),
    writeTimeoutMs: count(100).default(1_500),
    writeAttempts: count(1).default(3),
    seriesLimit: count(1).default(100_000),
    // The series index (facility, measurement, field, tags) holds rows up to 2,704 bytes; the key's own
    // bytes plus the row's other columns must stay below that.
    seriesKeyMaxBytes: count(16).max(2_600, 'must be at most 2600 (a series index row holds at most 2704 bytes)').default(2_048),
    lineMaxBytes: count(64).default(1 << 20),
    // Slow and idle clients; unset means the gateway's defaults (src/ingest/server.ts SLOW_CLIENT_DEFAULTS).
    headersTimeoutMs: count(100).optional(),
    idleTimeoutMs: count(100).optional(),
    bodyIdleTimeoutMs: count(100).optional(),
    bodyMinBytesPerSecond: count(0).optional(),
    maxConnections: count(16).optional(),
    timeMaxPast: span(1).default('10 years'),
    timeMaxFuture: span(0).default('1 day'),
    ledgerRetention: interval.default('2 days'),
    tierWarmAfter: age.default(TIER_DEFAULTS.tierWarmAfter),
    tierColdAfter: age.default(TIER_DEFAULTS.tierColdAfter),
    archiveAfter: age.default(TIER_DEFAULTS.archiveAfter),
    tierColdMerge: hoursOrDays(TIER_DEFAULTS.tierColdMerge),
    tierHotCompactAfter: hoursOrDays(TIER_DEFAULTS.tierHotCompactAfter),
    tierWindow: z.string().regex(WINDOW, 'must be HH:MM-HH:MM in UTC, such as "01:00-05:00"').optional(),
    tierSchedule: z.string().min(1).default('17 * * * *'),
    tierLockTimeoutMs: count(10).default(5_000),
    workerListen: listen('"127.0.0.1:9465"').default('127.0.0.1:9465'),
    archiveBuckets: z
      .string()
      .regex(BUCKETS, 'must list region=bucket pairs separated by commas, such as "eu-west-1=strata-eu,us-east-1=strata-us" (bucket names: 3-63 lowercase letters, digits, dots, hyphens)')
      .optional(),
    archivePrefix: z.string().regex(/^[A-Za-z0-9!_.*'()/-]{0,200}$/, 'must be an S3 key prefix of letters, digits and !_.*\'()/-').default('strata'),
    archiveStorageClass: z.enum(['GLACIER', 'DEEP_ARCHIVE', 'GLACIER_IR', 'STANDARD']).default('GLACIER'),
    archiveObjectLock: z.enum(['off', 'GOVERNANCE', 'COMPLIANCE']).default('off'),
    archiveRetention: age.default('7 years'),
    archiveRestoreTier: z.enum(['Standard', 'Bulk', 'Expedited']).default('Standard'),
    archiveRestoreDays: count(1).default(7),
    archiveWorkDir: z.string().min(1).optional(),
    devS3Listen: listen('"127.0.0.1:4568"').default('127.0.0.1:4568'),
    s3Endpoint: z.url({ protocol: /^https?$/, error: 'must be an http:// or https:// URL, such as http://127.0.0.1:9000' }).optional(),
    // BENCHMARK ONLY — never set in production. `strata serve` then acknowledges every request as
    // committed and throws the encoded rows away (no COPY), so `npm run bench -- --gateway-only` can
    // measure parse + encode cost alone. Read by `strata serve` only (src/serve.ts).
    benchDiscard: z
      .union([z.boolean(), z.stringbool()], { error: 'must be 1 or 0 (true or false)' })
      .optional()
      .describe('Benchmark only, never in production: strata serve acknowledges rows and discards them instead of writing them to the database (npm run bench -- --gateway-only).'),
  })
  .strict()
  .refine((c) => c.maxQueueBytes >= c.maxBodyBytes, {
    path: ['maxQueueBytes'],
    message: 'must be at least STRATA_MAX_BODY_BYTES, or a request of the largest accepted size could never be queued',
  })
  .refine((c) => !c.tlsKey || c.tlsCert, { path: ['tlsKey'], message: 'needs STRATA_TLS_CERT too (the certificate of this key)' })
  .refine((c) => !c.tlsCert || c.tlsKey, { path: ['tlsCert'], message: 'needs STRATA_TLS_KEY too (the private key of this certificate)' })
  .refine((c) => !c.tlsCa || c.tlsCert, { path: ['tlsCa'], message: 'asks clients for certificates over TLS, so it needs STRATA_TLS_CERT and STRATA_TLS_KEY too' })
  .refine((c) => !c.tlsAllowPlain || c.tlsCert, { path: ['tlsAllowPlain'], message: 'allows plain HTTP beside TLS, so it needs STRATA_TLS_CERT and STRATA_TLS_KEY too' });

export type Config = z.infer<typeof configSchema>;
type Key = keyof Config;

/** Environment variable of each configuration key; the JSON file uses the key itself. */
export const ENV_NAMES: Record<Key, string> = {
  databaseUrl: 'STRATA_DATABASE_URL',
  adminDatabaseUrl: 'STRATA_ADMIN_DATABASE_URL',
  notifyDatabaseUrl: 'STRATA_NOTIFY_DATABASE_URL',
  metricsToken: 'STRATA_METRICS_TOKEN',
  tlsCert: 'STRATA_TLS_CERT',
  tlsKey: 'STRATA_TLS_KEY',
  tlsCa: 'STRATA_TLS_CA',
  tlsMinVersion: 'STRATA_TLS_MIN_VERSION',
  tlsAllowPlain: 'STRATA_TLS_ALLOW_PLAIN',
  region: 'STRATA_REGION',
  chunkInterval: 'STRATA_CHUNK_INTERVAL',
  warmTablespace: 'STRATA_WARM_TABLESPACE',
  coldTablespace: 'STRATA_COLD_TABLESPACE',
  logLevel: 'STRATA_LOG_LEVEL',
  devDir: 'STRATA_DEV_DIR',
  listen: 'STRATA_LISTEN',
  spoolDir: 'STRATA_SPOOL_DIR',
  spoolMaxBytes: 'STRATA_SPOOL_MAX_BYTES',
  maxQueueBytes: 'STRATA_MAX_QUEUE_BYTES',
  maxBodyBytes: 'STRATA_MAX_BODY_BYTES',
  batchRows: 'STRATA_BATCH_ROWS',
  batchAgeMs: 'STRATA_BATCH_AGE_MS',
  writers: 'STRATA_WRITERS',
  ingestMode: 'STRATA_INGEST_MODE',
  gatewayProcesses: 'STRATA_GATEWAY_PROCESSES',
  writeTimeoutMs: 'STRATA_WRITE_TIMEOUT_MS',
  writeAttempts: 'STRATA_WRITE_ATTEMPTS',
  seriesLimit: 'STRATA_SERIES_LIMIT',
  seriesKeyMaxBytes: 'STRATA_SERIES_KEY_MAX_BYTES',
  lineMaxBytes: 'STRATA_LINE_MAX_BYTES',
  headersTimeoutMs: 'STRATA_HEADERS_TIMEOUT_MS',
  idleTimeoutMs: 'STRATA_IDLE_TIMEOUT_MS',
  bodyIdleTimeoutMs: 'STRATA_BODY_IDLE_TIMEOUT_MS',
  bodyMinBytesPerSecond: 'STRATA_BODY_MIN_BYTES_PER_SECOND',
  maxConnections: 'STRATA_MAX_CONNECTIONS',
  timeMaxPast: 'STRATA_TIME_MAX_PAST',
  timeMaxFuture: 'STRATA_TIME_MAX_FUTURE',
  ledgerRetention: 'STRATA_LEDGER_RETENTION',
  tierWarmAfter: 'STRATA_TIER_WARM_AFTER',
  tierColdAfter: 'STRATA_TIER_COLD_AFTER',
  archiveAfter: 'STRATA_ARCHIVE_AFTER',
  tierColdMerge: 'STRATA_TIER_COLD_MERGE',
  tierHotCompactAfter: 'STRATA_TIER_HOT_COMPACT_AFTER',
  tierWindow: 'STRATA_TIER_WINDOW',
  tierSchedule: 'STRATA_TIER_SCHEDULE',
  tierLockTimeoutMs: 'STRATA_TIER_LOCK_TIMEOUT_MS',
  workerListen: 'STRATA_WORKER_LISTEN',
  archiveBuckets: 'STRATA_ARCHIVE_BUCKETS',
  archivePrefix: 'STRATA_ARCHIVE_PREFIX',
  archiveStorageClass: 'STRATA_ARCHIVE_STORAGE_CLASS',
  archiveObjectLock: 'STRATA_ARCHIVE_OBJECT_LOCK',
  archiveRetention: 'STRATA_ARCHIVE_RETENTION',
  archiveRestoreTier: 'STRATA_ARCHIVE_RESTORE_TIER',
  archiveRestoreDays: 'STRATA_ARCHIVE_RESTORE_DAYS',
  archiveWorkDir: 'STRATA_ARCHIVE_WORK_DIR',
  devS3Listen: 'STRATA_DEV_S3_LISTEN',
  s3Endpoint: 'STRATA_S3_ENDPOINT',
  benchDiscard: 'STRATA_BENCH_DISCARD',
};

/** Host and port of a `listen` setting. */
export function listenAddress(listen: string): { host: string; port: number } {
  const m = LISTEN.exec(listen)!;
  return { host: (m[1] ?? '0.0.0.0').replace(/^\[|\]$/g, ''), port: Number(m[2]) };
}

const URL_KEYS: ReadonlySet<string> = new Set(['databaseUrl', 'adminDatabaseUrl', 'notifyDatabaseUrl']);

function show(key: string, value: unknown): string {
  if (URL_KEYS.has(key) && typeof value !== 'string') return `(a ${Array.isArray(value) ? 'list' : typeof value})`;
  if (typeof value !== 'string') return redact(JSON.stringify(value) ?? String(value));
  return JSON.stringify(URL_KEYS.has(key) ? redactUrl(value) : redact(value));
}

function readConfigFile(path: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new ConfigError([`config file ${path}: cannot be read (${(err as NodeJS.ErrnoException).code ?? String(err)})`]);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw new ConfigError([`config file ${path}: not valid JSON (${(err as Error).message})`]);
  }
  if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) {
    throw new ConfigError([`config file ${path}: must hold a JSON object of settings`]);
  }
  return parsed as Record<string, unknown>;
}

/**
 * Load the configuration: defaults, then the JSON file (if given), then STRATA_* variables.
 * Every problem is reported at once, each naming its variable (or file key) and the reason;
 * credentials never appear in the message.
 */
export function loadConfig(opts: { env?: NodeJS.ProcessEnv; file?: string } = {}): Config {
  const env = opts.env ?? process.env;
  const merged: Record<string, unknown> = {};
  const origin: Record<string, string> = {};
  if (opts.file) {
    for (const [k, v] of Object.entries(readConfigFile(opts.file))) {
      merged[k] = v;
      origin[k] = `${opts.file}: "${k}"`;
    }
  }
  for (const [key, name] of Object.entries(ENV_NAMES)) {
    const v = env[name];
    if (v !== undefined && v !== '') {
      merged[key] = v;
      origin[key] = name;
    }
  }
  for (const key of URL_KEYS) {
    const v = merged[key];
    if (typeof v === 'string') redactUrl(v); // registers the password as a secret
  }
  const result = configSchema.safeParse(merged);
  if (!result.success) {
    const problems = result.error.issues.map((issue) => {
      if (issue.code === 'unrecognized_keys') {
        return issue.keys
          .map((k) => `${opts.file ?? 'config'}: unknown setting "${k}" (known: ${Object.keys(ENV_NAMES).join(', ')})`)
          .join('\n  - ');
      }
      const key = String(issue.path[0] ?? '');
      const where = origin[key] ?? ENV_NAMES[key as Key] ?? key;
      return `${where}=${show(key, merged[key])}: ${issue.message}`;
    });
    throw new ConfigError(problems);
  }
  const config = result.data;
  registerSecret(config.metricsToken);
  for (const key of URL_KEYS) {
    const v = config[key as Key];
    if (typeof v === 'string') {
      try {
        registerSecret(decodeURIComponent(new URL(v).password));
      } catch {
        /* pglite: URLs carry no password */
      }
    }
  }
  return config;
}

/** A setting that the current command cannot do without. */
export function requireSetting<K extends Key>(config: Config, key: K, purpose: string): NonNullable<Config[K]> {
  const value = config[key];
  if (value === undefined || value === null) {
    throw new ConfigError([`${ENV_NAMES[key]} is required ${purpose}`]);
  }
  return value as NonNullable<Config[K]>;
}
