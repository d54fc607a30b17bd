// Glossary
//   tier        where a chunk belongs by age: hot (default tablespace, row store or written
//               compressed by the columnstore ingest), warm (warm
//               tablespace, compressed), cold (cold tablespace, compressed with the cold settings).
//   boundary    the instant a tier starts: a chunk is in a tier once its whole range (range_end) is
//               older than the boundary; a chunk straddling a boundary stays in the newer tier.
//   archive due a chunk entirely older than the archive boundary; tiering keeps it cold and hands
//               it to the archive worker (src/backup).
//   step        one idempotent action on one chunk: move (uncompressed chunk, reordered by the
//               hypertable's time index), compress, move-compressed (the chunk and its internal
//               compressed chunk together), recompress (a partial chunk: decompressed and compressed
//               again, so its rows are re-batched), compact (a hot chunk written compressed: recompressed
//               in memory, compress_chunk(recompress => true), never decompressed to the row store);
//               or on adjacent cold chunks: merge.
//   partial     a compressed chunk holding rows outside its compressed batches (late rows), or whose
//               batches come from several chunks (after a merge): recompressing re-batches them.
//   unordered   a compressed chunk whose batches overlap in time: written compressed by the
//               columnstore ingest (STRATA_INGEST_MODE), one small batch per series and COPY;
//               recompressing it gives full batches: in place once its range ended an hour ago
//               (compaction, STRATA_TIER_HOT_COMPACT_AFTER), else on the way to warm.
//   merge       adjacent settled cold chunks within one merge unit (STRATA_TIER_COLD_MERGE, a day by
//               default) become one chunk, then are recompressed: fuller batches per series, the
//               strongest compression TimescaleDB offers (bench/results/compression.md).
//   plan        the steps every chunk needs to reach its tier; read-only.
//   run         executes a plan one step at a time under a session advisory lock, journaling each step.

import type { ChunkState } from '../jobs/types.ts';

// The chunk catalog's and the policy's types, shared with the archive (src/jobs/).
export type { Boundaries, ChunkState } from '../jobs/types.ts';

export type Tier = 'hot' | 'warm' | 'cold';

export type StepKind = 'move' | 'compress' | 'move-compressed' | 'recompress' | 'compact' | 'merge';

/** Adjacent settled cold chunks within one merge unit, to become one chunk. */
export interface Merge {
  rangeStart: Date;
  rangeEnd: Date;
  chunks: string[];
  bytes: number;
}

export interface Step {
  kind: StepKind;
  /** Destination tablespace of a move. */
  tablespace?: string;
}

export interface ChunkPlan {
  chunk: ChunkState;
  current: Tier;
  target: Tier;
  archiveDue: boolean;
  steps: Step[];
}
