// How the writer's COPY stores rows (STRATA_INGEST_MODE): in the row store, compressed later by the
// tiering worker, or compressed as they are copied (TimescaleDB's direct compress COPY) where the
// database can. The decision is made against the database itself, once it answers; a database that
// cannot compress on COPY gets the row store, with the reason.
import type { Queryable } from '../db/port.ts';
import type { Logger } from '../log.ts';

export type IngestMode = 'rowstore' | 'columnstore';

export interface ModeDecision {
  /** What the writer does. */
  mode: IngestMode;
  /** What was asked for. */
  wanted: IngestMode;
  /** Why the mode is not the one asked for; null when it is. */
  fallback: string | null;
}

/** TimescaleDB's setting for a COPY that compresses (set per transaction: COLUMNSTORE_SETTINGS). */
export const DIRECT_COMPRESS = 'timescaledb.enable_direct_compress_copy';
/** The first release with direct compress COPY, and the first that keeps it on a hypertable with a continuous aggregate. */
const FIRST = [2, 21];
const FIRST_WITH_CAGG = [2, 24];

function atLeast(version: string, [major, minor]: number[]): boolean {
  const [a = 0, b = 0] = version.split('.').map((p) => Number.parseInt(p, 10));
  return a > major! || (a === major && b >= minor!);
}

interface Facts {
  version: string | null;
  license: string | null;
  setting: string | null;
  compression: boolean | null;
  caggs: number;
}

async function facts(db: Queryable): Promise<Facts> {
  const ext = (await db.query<{ v: string }>(`SELECT extversion AS v FROM pg_extension WHERE extname = 'timescaledb'`)).rows[0];
  if (!ext) return { version: null, license: null, setting: null, compression: null, caggs: 0 };
  const r = await db.query<{ license: string | null; setting: string | null; compression: boolean | null; caggs: string }>(
    `SELECT current_setting('timescaledb.license', true) AS license,
            current_setting('${DIRECT_COMPRESS}', true) AS setting,
            (SELECT compression_enabled FROM timescaledb_information.hypertables
              WHERE hypertable_schema = 'strata' AND hypertable_name = 'metrics') AS compression,
            (SELECT count(*) FROM timescaledb_information.continuous_aggregates
              WHERE hypertable_schema = 'strata' AND hypertable_name = 'metrics') AS caggs`,
  );
  const row = r.rows[0]!;
  return { version: ext.v, license: row.license, setting: row.setting, compression: row.compression, caggs: Number(row.caggs) };
}

/** The mode for `wanted` on this database: columnstore only where its COPY compresses. */
export async function decideIngestMode(db: Queryable, wanted: IngestMode): Promise<ModeDecision> {
  if (wanted === 'rowstore') return { mode: 'rowstore', wanted, fallback: null };
  const f = await facts(db);
  const why =
    f.version === null
      ? 'TimescaleDB is not installed in this database'
      : f.license === 'apache'
        ? `TimescaleDB ${f.version} is an Apache-only build, which has no compression`
        : !atLeast(f.version, FIRST) || f.setting === null
          ? `TimescaleDB ${f.version} has no direct compress COPY (${DIRECT_COMPRESS}, 2.21 and later)`
          : f.compression !== true
            ? 'compression is not enabled on strata.metrics (run strata migrate)'
            : f.caggs > 0 && !atLeast(f.version, FIRST_WITH_CAGG)
              ? `TimescaleDB ${f.version} turns direct compress off on a hypertable with a continuous aggregate (strata.metrics_hourly); 2.24 and later keep it on`
              : null;
  return why === null ? { mode: 'columnstore', wanted, fallback: null } : { mode: 'rowstore', wanted, fallback: `${why}; writing to the row store` };
}

/**
 * What a columnstore transaction sets before its COPY, local to the transaction (PgBouncer's
 * transaction pooling hands the connection on afterwards). Batches are sorted by the server
 * (`..._sort_batches`, its default), not declared sorted by the client: `..._client_sorted` also
 * leaves the chunk marked ordered, which batches from several writers and late rows are not.
 */
export const COLUMNSTORE_SETTINGS = `SELECT set_config('${DIRECT_COMPRESS}', 'on', true)`;

/**
 * The decision, made once the database answers: asked at the first write (and again after a
 * failure to ask, such as the database being down at start), then kept for the process's life.
 */
export class IngestModeGate {
  private decided: ModeDecision | null = null;
  private asking: Promise<ModeDecision> | null = null;

  constructor(
    private readonly db: Queryable,
    readonly wanted: IngestMode,
    private readonly onDecided: (d: ModeDecision) => void = () => {},
  ) {
    if (wanted === 'rowstore') this.decided = { mode: 'rowstore', wanted, fallback: null };
  }

  /** The decision once made, else null. */
  get decision(): ModeDecision | null {
    return this.decided;
  }

  /** The writer's mode; the first call asks the database. */
  async mode(): Promise<IngestMode> {
    if (this.decided) return this.decided.mode;
    this.asking ??= decideIngestMode(this.db, this.wanted).then(
      (d) => {
        this.decided = d;
        this.onDecided(d);
        return d;
      },
      (err: unknown) => {
        this.asking = null;
        throw err;
      },
    );
    return (await this.asking).mode;
  }
}

/**
 * What the gateway (and `strata spool replay`) says once the mode is decided. A fallback is
 * information, not a fault: columnstore is the default, and the row store keeps every promise.
 */
export function logDecision(log: Logger): (d: ModeDecision) => void {
  return (d) => {
    if (d.fallback) log.info(`ingest mode: ${d.wanted} asked for, ${d.mode} used`, { reason: d.fallback });
    else log.info(`ingest mode: ${d.mode}`);
  };
}
