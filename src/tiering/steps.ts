// The SQL of each step, and the content check around a chunk's steps. Every statement runs outside a
// transaction block (move_chunk refuses one) with lock_timeout set, so a step waiting on a lock
// gives up quickly instead of queueing ingest behind it (TimescaleDB takes its heavy locks on the
// chunk being moved or compressed only; writes into recent chunks never wait for them).
import type { Queryable } from '../db/port.ts';
import type { Step } from './types.ts';

/**
 * The index move_chunk rewrites an uncompressed chunk in: the hypertable's clustered index if it
 * has one, else its per-series time index (so a compressed segment reads sequentially), else any
 * index on time. Null when the hypertable has none (the move then fails with that reason).
 */
export async function reorderIndex(db: Queryable, hypertable: string): Promise<string | null> {
  const r = await db.query<{ idx: string }>(
    `SELECT i.indexrelid::regclass::text AS idx
       FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
      WHERE i.indrelid = $1::regclass
      ORDER BY i.indisclustered DESC, (c.relname LIKE '%series%time%') DESC, c.relname
      LIMIT 1`,
    [hypertable],
  );
  return r.rows[0]?.idx ?? null;
}

/**
 * The largest compressed batch this TimescaleDB allows (timescaledb.compression_batch_size_limit: 1000
 * up to 2.2x, 32767 in later releases), or null without the setting. Cold chunks are compressed with
 * it: one batch holds more of a series, the strongest compression (bench/results/compression.md).
 */
export async function largestBatch(db: Queryable): Promise<number | null> {
  const r = await db.query<{ max: string }>(`SELECT max_val AS max FROM pg_settings WHERE name = 'timescaledb.compression_batch_size_limit'`);
  return r.rows[0] ? Number(r.rows[0].max) : null;
}

/** compress_chunk, with the batch limit raised for this statement's session when given. */
async function compress(db: Queryable, chunk: string, batchLimit: number | null): Promise<void> {
  if (batchLimit) await db.query(`SELECT set_config('timescaledb.compression_batch_size_limit', $1, false)`, [String(batchLimit)]);
  try {
    await db.query(`SELECT compress_chunk($1::regclass, if_not_compressed => true)`, [chunk]);
  } finally {
    if (batchLimit) await db.exec('RESET timescaledb.compression_batch_size_limit');
  }
}

/** Merges adjacent chunks into the first (merge_chunks); the rows stay compressed, in the batches they had. */
export async function mergeChunks(db: Queryable, chunks: string[]): Promise<void> {
  await db.query(`CALL merge_chunks($1::text[]::regclass[])`, [chunks]);
}

export async function runStep(db: Queryable, chunk: string, step: Step, index: string | null, batchLimit: number | null = null): Promise<void> {
  switch (step.kind) {
    case 'move':
      if (!index) throw new Error(`cannot move ${chunk}: its hypertable has no index to reorder by (move_chunk needs one for an uncompressed chunk)`);
      await db.query(
        `SELECT move_chunk(chunk => $1::regclass, destination_tablespace => $2::name, index_destination_tablespace => $2::name, reorder_index => $3::regclass)`,
        [chunk, step.tablespace, index],
      );
      return;
    case 'compress':
      await compress(db, chunk, batchLimit);
      return;
    case 'recompress':
      // Decompressed, then compressed again: every series' rows re-batched. Stopped in between, the
      // chunk is simply uncompressed, and the next run compresses it.
      await db.query(`SELECT decompress_chunk($1::regclass, if_compressed => true)`, [chunk]);
      await compress(db, chunk, batchLimit);
      return;
    case 'compact':
      // Recompressed in memory, batch by batch, into one full batch per series: about 1/25 of the WAL
      // and a seventh of the time of decompress + compress (bench/results/hot-compaction.md), and the
      // chunk is compressed throughout, so a stop leaves it as it was.
      await db.query(`SELECT compress_chunk($1::regclass, recompress => true)`, [chunk]);
      return;
    case 'merge':
      throw new Error('a merge spans several chunks: use mergeChunks');
    case 'move-compressed':
      // On a compressed chunk move_chunk moves the chunk and its internal compressed chunk together.
      await db.query(`SELECT move_chunk(chunk => $1::regclass, destination_tablespace => $2::name, index_destination_tablespace => $2::name)`, [chunk, step.tablespace]);
      return;
  }
}

export interface Content {
  rows: number;
  /** Sum of a 64-bit hash of every row's text: order-independent, changes with any row's content. */
  checksum: string;
}

/** Row count and checksum of a chunk's rows, read through the hypertable (compressed rows included). */
export async function chunkContent(db: Queryable, hypertable: string, rangeStart: Date, rangeEnd: Date): Promise<Content> {
  const r = await db.query<{ n: number | string; h: string }>(
    `SELECT count(*) AS n, coalesce(sum(hashtextextended(m::text, 0)), 0)::text AS h FROM ${hypertable} m WHERE time >= $1 AND time < $2`,
    [rangeStart, rangeEnd],
  );
  return { rows: Number(r.rows[0]!.n), checksum: r.rows[0]!.h };
}

export const describeStep = (s: Step): string => (s.tablespace ? `${s.kind} → ${s.tablespace}` : s.kind);
