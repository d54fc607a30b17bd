// Reads the chunks of a hypertable as they are now: range, tablespace, compression, size. Every
// step re-reads its chunk here first, so a run after a crash starts from the catalog, not from the
// journal (DESIGN §4).
import type { Queryable } from '../db/port.ts';
import type { ChunkState } from './types.ts';

export const HYPERTABLE = 'strata.metrics';

const CHUNKS = `
  SELECT format('%I.%I', c.chunk_schema, c.chunk_name) AS chunk,
         c.range_start, c.range_end, c.is_compressed AS compressed, (ch.status & 8) <> 0 AS partial, (ch.status & 2) <> 0 AS unordered,
         ts.spcname AS tablespace,
         cts.spcname AS compressed_tablespace,
         pg_total_relation_size(cl.oid) + coalesce(pg_total_relation_size(ccl.oid), 0) AS bytes,
         s.before_compression_total_bytes AS before, s.after_compression_total_bytes AS after
    FROM timescaledb_information.chunks c
    JOIN _timescaledb_catalog.chunk ch ON ch.schema_name = c.chunk_schema AND ch.table_name = c.chunk_name
    JOIN pg_class cl ON cl.oid = format('%I.%I', c.chunk_schema, c.chunk_name)::regclass
    LEFT JOIN pg_tablespace ts ON ts.oid = cl.reltablespace
    LEFT JOIN _timescaledb_catalog.chunk cc ON cc.id = ch.compressed_chunk_id
    LEFT JOIN pg_namespace ccn ON ccn.nspname = cc.schema_name
    LEFT JOIN pg_class ccl ON ccl.relnamespace = ccn.oid AND ccl.relname = cc.table_name
    LEFT JOIN pg_tablespace cts ON cts.oid = ccl.reltablespace
    LEFT JOIN chunk_compression_stats($1::regclass) s ON s.chunk_schema = c.chunk_schema AND s.chunk_name = c.chunk_name
   WHERE format('%I.%I', c.hypertable_schema, c.hypertable_name)::regclass = $1::regclass`;

interface Row {
  chunk: string;
  range_start: Date;
  range_end: Date;
  compressed: boolean;
  partial: boolean;
  unordered: boolean;
  tablespace: string | null;
  compressed_tablespace: string | null;
  bytes: number | string;
  before: number | string | null;
  after: number | string | null;
}

const toState = (r: Row): ChunkState => ({
  chunk: r.chunk,
  rangeStart: r.range_start,
  rangeEnd: r.range_end,
  tablespace: r.tablespace,
  compressed: r.compressed,
  compressedTablespace: r.compressed ? r.compressed_tablespace : null,
  bytes: Number(r.bytes),
  bytesBeforeCompression: r.compressed && r.before !== null ? Number(r.before) : null,
  bytesAfterCompression: r.compressed && r.after !== null ? Number(r.after) : null,
  partial: r.compressed && r.partial,
  unordered: r.compressed && r.unordered,
});

export async function readChunks(db: Queryable, hypertable = HYPERTABLE): Promise<ChunkState[]> {
  const r = await db.query<Row>(`${CHUNKS} ORDER BY c.range_start`, [hypertable]);
  return r.rows.map(toState);
}

/** One chunk's state, or null when it no longer exists (dropped or archived meanwhile). */
export async function readChunk(db: Queryable, chunk: string, hypertable = HYPERTABLE): Promise<ChunkState | null> {
  const r = await db.query<Row>(`${CHUNKS} AND format('%I.%I', c.chunk_schema, c.chunk_name) = $2`, [hypertable, chunk]);
  return r.rows[0] ? toState(r.rows[0]) : null;
}

/** TimescaleDB's own compression or retention jobs on the hypertable: they would race with the workers. */
export async function racingPolicies(db: Queryable, hypertable = HYPERTABLE): Promise<{ jobId: number; kind: string; schedule: string }[]> {
  const r = await db.query<{ job_id: number; proc_name: string; schedule_interval: string }>(
    `SELECT job_id, proc_name, schedule_interval::text AS schedule_interval FROM timescaledb_information.jobs
      WHERE proc_name IN ('policy_compression', 'policy_retention', 'policy_reorder')
        AND format('%I.%I', hypertable_schema, hypertable_name)::regclass = $1::regclass ORDER BY job_id`,
    [hypertable],
  );
  return r.rows.map((x) => ({ jobId: x.job_id, kind: x.proc_name.replace(/^policy_/, ''), schedule: x.schedule_interval }));
}

/** racingPolicies as operator warnings, each with the call that removes the policy. */
export async function racingPolicyWarnings(db: Queryable, hypertable = HYPERTABLE): Promise<string[]> {
  return (await racingPolicies(db, hypertable)).map(
    (j) => `TimescaleDB ${j.kind} policy (job ${j.jobId}, every ${j.schedule}) runs on ${hypertable} and races with strata's workers; remove it (SELECT remove_${j.kind}_policy('${hypertable}'))`,
  );
}
