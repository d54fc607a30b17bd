// `strata dev`: everything on one machine with no setup. For now: an embedded TimescaleDB (PGlite)
// under the dev directory, with warm and cold tablespaces, migrated, and its state printed.
import { join, resolve } from 'node:path';
import type { Config } from './config.ts';
import { migrate } from './db/migrate.ts';
import { openPglite } from './db/pglite.ts';
import type { Logger } from './log.ts';
import { formatStatus, readStatus } from './status.ts';

export async function runDev(config: Config, log: Logger, out: (text: string) => void): Promise<void> {
  const dir = resolve(config.devDir);
  const url = `pglite:${join(dir, 'pgdata')}`;
  out(`strata dev: embedded TimescaleDB in ${dir}`);
  const db = await openPglite(url);
  try {
    const warm = config.warmTablespace ?? 'warm_data';
    const cold = config.coldTablespace ?? 'cold_data';
    await db.ensureTablespace(warm);
    await db.ensureTablespace(cold);
    const result = await migrate(db, { chunkInterval: config.chunkInterval, warmTablespace: warm, coldTablespace: cold, logger: log });
    out(result.applied.length ? `applied ${result.applied.length} migrations` : 'schema up to date');
    out(formatStatus(await readStatus(db)));
    out(`\ninspect it later with: STRATA_ADMIN_DATABASE_URL=${url} npx strata status`);
  } finally {
    await db.close();
  }
}
