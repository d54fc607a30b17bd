// Command line: parses arguments, loads configuration, and calls the modules below. Nothing imports it.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { loadConfig, requireSetting, type Config } from './config.ts';
import { pgliteDir } from './db/dir-lock.ts';
import { askHolder, strataEnv } from './dev-socket.ts';
import { openDb } from './db/open.ts';
import type { Db } from './db/port.ts';
import { StrataError, UsageError, errorText } from './errors.ts';
import { createLogger, type Logger } from './log.ts';
import { STRATA_VERSION } from './version.ts';
// Each command's modules are imported when it runs, so `strata serve` and `strata worker` never load
// the embedded database (PGlite) or the local S3 server that `strata dev` uses.

const HELP = `strata — time-series ingestion and retention for TimescaleDB

usage: strata <command> [options]

commands:
  dev                               embedded TimescaleDB under ./.strata and the gateway on :8086 with
                                    a demo facility; prints a curl example and a Telegraf snippet
  serve [--processes <n>]           the ingest gateway (STRATA_DATABASE_URL through PgBouncer, STRATA_REGION);
                                    n processes on one address, each with its spool under STRATA_SPOOL_DIR/process-<i>
                                    (default STRATA_GATEWAY_PROCESSES, else the machine's cores; 1: a single process)
  migrate                           apply the SQL migrations (STRATA_ADMIN_DATABASE_URL)
  status                            show the schema, hypertable and facilities of a database
  facility add <code> --region <r>  register a facility; prints its ingest token and reader login once
               [--name <text>] [--json]
  facility list [--json]            list facilities (never their tokens)
  bench (--url <url> | --embedded | --testcontainers) [...]
                                    the benchmark harness (see bench/run.ts; same as npm run bench --)
  size --rate <metrics/s> --facilities <n> --memory <e.g. 512GiB>
       [--series <per facility>] [--hot-days 30] [--warm-days 150] [--cold-days 365]
       [--archive-years 7] [--results bench/results] [--json]
                                    what a region needs, from the measured benchmark figures
  facility grant <role> <facility>  let a database role read a facility through strata.facility_metrics
  facility revoke <role> <facility> take that back
  facility rotate-token <code> [--grace 10m] [--json]
                                    a new ingest token, printed once; the old one works for the grace period only
  facility revoke-token <code>      no token of the facility works any more (until rotate-token)
  facility disable|enable <code>    refuse (403) or accept again the facility's writes
  facility remove <code> [--keep-data | --delete-data]
                                    tokens, grants and reader role go; with data, one of the options is required
  audit [--since <time or 24h>] [--facility <code>] [--json]
                                    admin actions: when, database role, OS user, action, facility
  tier plan [--at <time>] [--json]  per chunk: range, size, tier and state, and the steps to its target tier
  tier run [--max-chunks <n>] [--max-duration 30m] [--window HH:MM-HH:MM] [--no-verify] [--json]
                                    move and compress chunks hot → warm → cold, one step at a time, journaled
  archive plan [--at <time>] [--json]
                                    chunks older than the archive boundary, their catalog state and steps
  archive run [--max-chunks <n>] [--max-duration 2h] [--json]
                                    export, upload (tar.gz to this region's bucket), verify, then drop them
  archive list [--from <t>] [--to <t>] [--facility <code>] [--json]
                                    the archive catalog
  archive restore --from <t> --to <t> [--facility <code>] [--into <table>] [--wait] [--poll 5m] [--max-wait 12h]
                                    Glacier restore (or resume one), download, verify and load
  archive expire [--dry-run] [--json]
                                    delete objects past their retention (STRATA_ARCHIVE_RETENTION)
  archive lifecycle [--apply] [--json]
                                    the equivalent S3 lifecycle rules (printed, or applied to the bucket)
  worker                            scheduled tiering then archive (STRATA_TIER_SCHEDULE), metrics on STRATA_WORKER_LISTEN
  spool inspect <dir> [--records] [--json]
                                    a gateway spool's segments and quarantine: records, rows, bytes, damage
  spool replay <dir> [--json]       commit the intact records kept in <dir>/quarantine/ (STRATA_DATABASE_URL;
                                    exactly once by batch id) and remove them; refused while a gateway holds <dir>

options:
  --config <file>   JSON file of settings (environment variables override it)
  -h, --help        this text
  --version         the version of strata

settings (environment): STRATA_DATABASE_URL, STRATA_ADMIN_DATABASE_URL, STRATA_REGION,
  STRATA_CHUNK_INTERVAL, STRATA_WARM_TABLESPACE, STRATA_COLD_TABLESPACE, STRATA_LOG_LEVEL, STRATA_DEV_DIR,
  STRATA_LISTEN, STRATA_SPOOL_DIR, STRATA_SPOOL_MAX_BYTES, STRATA_MAX_QUEUE_BYTES, STRATA_MAX_BODY_BYTES,
  STRATA_BATCH_ROWS, STRATA_BATCH_AGE_MS, STRATA_WRITERS, STRATA_GATEWAY_PROCESSES, STRATA_WRITE_TIMEOUT_MS, STRATA_WRITE_ATTEMPTS,
  STRATA_SERIES_LIMIT, STRATA_SERIES_KEY_MAX_BYTES, STRATA_LINE_MAX_BYTES, STRATA_LEDGER_RETENTION, STRATA_TIER_WARM_AFTER, STRATA_TIER_COLD_AFTER,
  STRATA_ARCHIVE_AFTER, STRATA_TIER_COLD_MERGE, STRATA_TIER_WINDOW, STRATA_TIER_SCHEDULE, STRATA_TIER_LOCK_TIMEOUT_MS, STRATA_WORKER_LISTEN,
  STRATA_ARCHIVE_BUCKETS, STRATA_ARCHIVE_PREFIX, STRATA_ARCHIVE_STORAGE_CLASS, STRATA_ARCHIVE_OBJECT_LOCK,
  STRATA_ARCHIVE_RETENTION, STRATA_ARCHIVE_RESTORE_TIER, STRATA_ARCHIVE_RESTORE_DAYS, STRATA_ARCHIVE_WORK_DIR,
  STRATA_S3_ENDPOINT; S3 credentials from the AWS SDK's default chain (AWS_ACCESS_KEY_ID, ...)
  (see README.md for each one's meaning and default)
`;

export interface Io {
  out: (text: string) => void;
  err: (text: string) => void;
  env: NodeJS.ProcessEnv;
  /** Set when `strata dev` runs a command forwarded to it: its own open database, used instead of opening one. */
  db?: Db;
}

const defaultIo: Io = {
  out: (t) => process.stdout.write(t + '\n'),
  err: (t) => process.stderr.write(t + '\n'),
  env: process.env,
};

/** Commands without options or arguments of their own: anything given is refused (exit 64), never ignored. */
const NO_OPTIONS: ReadonlySet<string> = new Set(['dev', 'migrate', 'status', 'worker']);

async function withAdminDb<T>(config: Config, purpose: string, log: Logger, fn: (db: Db) => Promise<T>, max = 2, held?: Db): Promise<T> {
  if (held) return fn(held); // a command forwarded to strata dev: its database stays open
  const url = requireSetting(config, 'adminDatabaseUrl', `${purpose} (a direct connection to the primary, not through PgBouncer)`);
  const db = await openDb(url, { logger: log, max, applicationName: 'strata-admin' });
  try {
    return await fn(db);
  } finally {
    await db.close();
  }
}

/**
 * The commands that only read, and so may be answered by a running `strata dev` that holds the
 * embedded directory (src/dev-socket.ts); every other command opening it is refused by its lock.
 */
function readOnlyCommand(command: string, args: string[]): boolean {
  const sub = args[0];
  return command === 'status' || command === 'audit' || (command === 'facility' && sub === 'list') || (command === 'tier' && sub === 'plan') || (command === 'archive' && (sub === 'plan' || sub === 'list'));
}

/** The embedded directory an admin command would open: STRATA_ADMIN_DATABASE_URL's, or strata dev's when that is unset. */
function adminEmbeddedDir(config: Config): string | undefined {
  if (config.adminDatabaseUrl === undefined) return resolve(config.devDir, 'pgdata');
  return config.adminDatabaseUrl.startsWith('pglite:') ? pgliteDir(config.adminDatabaseUrl) : undefined;
}

/** argv for another process: a relative --config file resolved from here. */
function portableArgv(argv: string[]): string[] {
  return argv.map((a, i) => (argv[i - 1] === '--config' ? resolve(a) : a.startsWith('--config=') ? `--config=${resolve(a.slice('--config='.length))}` : a));
}

export async function main(argv: string[], io: Io = defaultIo): Promise<number> {
  try {
    const { values, positionals } = parseArgs({
      args: argv,
      allowPositionals: true,
      strict: false,
      options: { config: { type: 'string' }, help: { type: 'boolean', short: 'h' }, version: { type: 'boolean' } },
    });
    if (values.version) {
      io.out(STRATA_VERSION);
      return 0;
    }
    const command = positionals[0];
    if (values.help || !command || command === 'help') {
      io.out(HELP);
      return command || values.help ? 0 : 64;
    }
    const rest = argv.filter((a, i) => !(a === '--config' || argv[i - 1] === '--config' || a.startsWith('--config=')));
    const args = rest.slice(rest.indexOf(command) + 1);
    if (NO_OPTIONS.has(command) && args.length > 0) {
      throw new UsageError(`strata ${command} takes no ${args[0]!.startsWith('-') ? 'option' : 'argument'} "${args[0]}" (settings come from STRATA_* variables or --config <file>); usage: strata ${command}`);
    }
    const config = loadConfig({ env: io.env, ...(typeof values.config === 'string' ? { file: values.config } : {}) });
    const log = createLogger(config.logLevel, (line) => io.err(line));
    if (io.db && !readOnlyCommand(command, args)) {
      throw new StrataError('not_read_only', `strata ${command}${args[0] ? ` ${args[0]}` : ''} changes the database, so strata dev does not run it for another process; stop strata dev first`);
    }
    if (!io.db && readOnlyCommand(command, args)) {
      // While strata dev holds the embedded directory, it answers this command on its own connection.
      const dir = adminEmbeddedDir(config);
      const code = dir === undefined ? undefined : await askHolder(dir, portableArgv(argv), strataEnv(io.env), io);
      if (code !== undefined) return code;
    }

    switch (command) {
      case 'dev': {
        const { runDev } = await import('./dev.ts');
        await runDev(config, log, io.out, (forwarded, env, sink, db) => main(forwarded, { ...sink, env, db }));
        return 0;
      }
      case 'bench': {
        // The harness lives in bench/ (it drives a gateway process and baselines); run it as its own process.
        const harness = fileURLToPath(new URL('../bench/run.ts', import.meta.url));
        if (!existsSync(harness)) throw new StrataError('no_bench', `strata bench runs from a checkout of Strata: ${harness} is not part of the installed package (bench/ is a development tool)`, { exitCode: 64 });
        const r = spawnSync(process.execPath, ['--import', 'tsx', harness, ...args], { stdio: 'inherit', env: io.env });
        return r.status ?? 1;
      }
      case 'size': {
        const { sizeCommand } = await import('./sizing/command.ts');
        io.out(sizeCommand(args));
        return 0;
      }
      case 'serve': {
        const { gatewayProcessCount, serveProcesses } = await import('./serve-processes.ts');
        const { values } = parseArgs({ args, options: { processes: { type: 'string' } } });
        await serveProcesses(config, log, io.out, { processes: gatewayProcessCount(values.processes, config), argv: portableArgv(argv) });
        return 0;
      }
      case 'migrate': {
        const { migrate } = await import('./db/migrate.ts');
        const { ensureEmbeddedTablespaces, migrateOptions } = await import('./settings.ts');
        const r = await withAdminDb(config, 'for strata migrate', log, async (db) => {
          // The tablespaces the worker moves chunks into are checked and granted by migrate.
          await ensureEmbeddedTablespaces(db, config);
          return migrate(db, migrateOptions(config, log));
        });
        io.out(r.applied.length ? `applied ${r.applied.length} migrations: ${r.applied.join(', ')}` : `schema up to date (${r.alreadyApplied} migrations applied earlier)`);
        io.out(`timescaledb ${r.timescaledbVersion} (license: ${r.license}); chunk interval ${r.chunkInterval.after}`);
        if (r.unavailable.length) io.out(`unavailable with this TimescaleDB build: ${r.unavailable.join('; ')}`);
        return 0;
      }
      case 'status': {
        const { formatStatus, readStatus } = await import('./status.ts');
        io.out(formatStatus(await withAdminDb(config, 'for strata status', log, (db) => readStatus(db), 2, io.db)));
        return 0;
      }
      case 'facility': {
        const { facilityCommand } = await import('./facilities/command.ts');
        return await facilityCommand(args, (purpose, fn, readOnly = false) => withAdminDb(config, purpose, log, fn, 2, readOnly ? io.db : undefined), io.out);
      }
      case 'audit': {
        const { auditCommand } = await import('./facilities/command.ts');
        return await auditCommand(args, (purpose, fn) => withAdminDb(config, purpose, log, fn, 2, io.db), io.out);
      }
      case 'worker': {
        const { runWorker } = await import('./worker.ts');
        await runWorker(config, log, io.out);
        return 0;
      }
      case 'spool': {
        const { spoolCommand } = await import('./ingest/spool-command.ts');
        return await spoolCommand(args, config, log, io.out);
      }
      case 'tier': {
        const { tierCommand } = await import('./tiering/command.ts');
        // One connection: the run's session advisory lock and lock_timeout live on it.
        return await withAdminDb(config, 'for strata tier', log, (db) => tierCommand(args, config, log, db, io.out), 1, io.db);
      }
      case 'archive': {
        const { archiveCommand } = await import('./backup/archive/command.ts');
        // One connection, as for tier: the chunk-job lock is a session lock.
        return await withAdminDb(config, 'for strata archive', log, (db) => archiveCommand(args, config, log, db, io.out), 1, io.db);
      }
      default:
        throw new UsageError(`unknown command "${command}"; run strata --help`);
    }
  } catch (err) {
    if (err instanceof StrataError) {
      io.err(`strata: ${err.message}`);
      return err.exitCode;
    }
    if ((err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
      io.err(`strata: ${errorText(err)}`);
      return 64;
    }
    io.err(`strata: unexpected error: ${errorText(err)}`);
    return 1;
  }
}
