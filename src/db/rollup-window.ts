// The hourly rollup (sql/0007) reaches back no further than the archive: its refresh policy's
// start_offset is at most the archive age. A refresh over a range whose raw chunks were archived
// finds no rows there and deletes those buckets, so a dashboard's history would shrink to what is
// still raw; bounded, no refresh ever covers an archived range. Late rows inside the window still
// reach the rollup at the next refresh; rows restored from the archive into the hypertable are
// never re-aggregated, so their buckets are neither lost nor counted twice.
// (Timescale's documented rule for continuous aggregates with data retention: refresh start_offset
// shorter than the age at which raw chunks are dropped.)
import { StrataError, errorText } from '../errors.ts';
import type { Queryable } from './port.ts';

export interface RollupWindow {
  /** The policy's start_offset before (null: unbounded) and after. */
  from: string | null;
  to: string;
  changed: boolean;
}

const POLICY = `
  SELECT j.job_id, j.config->>'start_offset' AS start,
         $1::interval::text AS wanted,
         coalesce((j.config->>'start_offset')::interval <= $1::interval, false) AS bounded
    FROM timescaledb_information.jobs j
   WHERE j.hypertable_schema = 'strata' AND j.hypertable_name = 'metrics_hourly' AND j.proc_name = 'policy_refresh_continuous_aggregate'`;

/**
 * Bounds the rollup's refresh policy to `archiveAfter` (a PostgreSQL interval) when it reaches
 * further back or is unbounded; a shorter window is kept. Null when there is no rollup policy (an
 * Apache-only build, or a schema without it).
 */
export async function boundRollupWindow(db: Queryable, archiveAfter: string): Promise<RollupWindow | null> {
  const r = await db.query<{ job_id: number; start: string | null; wanted: string; bounded: boolean }>(POLICY, [archiveAfter]);
  const p = r.rows[0];
  if (!p) return null;
  if (p.bounded) return { from: p.start, to: p.start!, changed: false };
  try {
    await db.query(
      `SELECT alter_job(j.job_id, config => jsonb_set(j.config, '{start_offset}', to_jsonb($2::interval::text)))
         FROM timescaledb_information.jobs j WHERE j.job_id = $1`,
      [p.job_id, archiveAfter],
    );
  } catch (err) {
    throw new StrataError(
      'rollup_window',
      `the hourly rollup's refresh policy (job ${p.job_id}) reaches back ${p.start ?? 'without limit'}, past the archive age of ${p.wanted}, ` +
        `and bounding it failed (${errorText(err)}); a refresh would delete the rollup's buckets of archived chunks. ` +
        `As the owner of strata.metrics_hourly run strata migrate with the same STRATA_ARCHIVE_AFTER, or: ` +
        `SELECT alter_job(${p.job_id}, config => jsonb_set(config, '{start_offset}', to_jsonb('${p.wanted}'::text))) FROM timescaledb_information.jobs WHERE job_id = ${p.job_id};`,
      { cause: err },
    );
  }
  return { from: p.start, to: p.wanted, changed: true };
}
