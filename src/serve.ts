// `strata serve` (and the gateway half of `strata dev`): a run that ends cleanly on SIGTERM or SIGINT,
// and reloads its TLS files on SIGHUP. Its options come from settings.ts.
import { requireSetting, type Config } from './config.ts';
import { openDb } from './db/open.ts';
import type { Db } from './db/port.ts';
import { startGateway, type Gateway } from './ingest/gateway.ts';
import type { Logger } from './log.ts';
import { untilSignal } from './signals.ts';
import { gatewayDbOptions, gatewayOptions } from './settings.ts';

/**
 * SIGHUP reads the gateway's TLS files again (new connections get the new certificate; open ones keep
 * theirs). Installed only with TLS configured, and before the gateway starts: a SIGHUP meanwhile is
 * then ignored (the files are read at start anyway) instead of ending the process. Returns the removal.
 */
export function reloadTlsOnSighup(config: Config, gateway: () => Gateway | undefined, log: Logger): () => void {
  if (!config.tlsCert) return () => {};
  const on = () => {
    const g = gateway();
    if (!g) return void log.info('SIGHUP before the gateway listens: its TLS files are read as it starts');
    try {
      g.reloadTls();
    } catch (err) {
      log.error('TLS reload failed: still serving the previous certificate', { error: err });
    }
  };
  process.on('SIGHUP', on);
  return () => process.off('SIGHUP', on);
}

/**
 * Runs the gateway until `signal` (from untilSignal(), taken before the gateway announces itself, so
 * a signal sent right after the announcement is never missed), then flushes and closes.
 */
/** Until the signal: then stops the gateway (flushing pending rows), anything else (`alsoStop`), and closes the database. */
export async function runGateway(db: Db, gateway: Gateway, log: Logger, signal: Promise<string>, alsoStop?: () => Promise<void>): Promise<void> {
  await signal;
  try {
    await gateway.stop();
    await alsoStop?.();
  } finally {
    await db.close().catch((err) => log.warn('closing the database failed', { error: err }));
  }
}

export async function serve(config: Config, log: Logger, out: (text: string) => void): Promise<void> {
  const url = requireSetting(config, 'databaseUrl', 'for strata serve (the gateway writes through PgBouncer)');
  const region = requireSetting(config, 'region', 'for strata serve (the gateway accepts only facilities of its region)');
  const signal = untilSignal(log);
  let gateway: Gateway | undefined;
  const stopReloading = reloadTlsOnSighup(config, () => gateway, log);
  const db = await openDb(url, gatewayDbOptions(config, log));
  try {
    try {
      // STRATA_BENCH_DISCARD (benchmark only): only `strata serve` honours it, never `strata dev`.
      gateway = await startGateway(db, log, { ...gatewayOptions(config, region), ...(config.benchDiscard ? { discardRows: true } : {}) });
    } catch (err) {
      await db.close();
      throw err;
    }
    out(`strata serve: region ${region}, listening on ${gateway.url}, ${config.benchDiscard ? `DISCARDING rows (STRATA_BENCH_DISCARD, benchmark only; catalog in ${db.target})` : `writing to ${db.target}`}`);
    await runGateway(db, gateway, log, signal);
  } finally {
    stopReloading();
  }
}
