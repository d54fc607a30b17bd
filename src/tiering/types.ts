// Glossary
//   tier        where a chunk belongs by age: hot (default tablespace, row store), warm (warm
//               tablespace, compressed), cold (cold tablespace, compressed with the cold settings).
//   boundary    the instant a tier starts: a chunk is in a tier once its whole range (range_end) is
//               older than the boundary; a chunk straddling a boundary stays in the newer tier.
//   archive due a chunk entirely older than the archive boundary; tiering keeps it cold and hands
//               it to the archive worker (src/backup).
//   step        one idempotent action on one chunk: move (uncompressed chunk, reordered by the
//               hypertable's time index), compress, move-compressed (the chunk and its internal
//               compressed chunk together).
//   plan        the steps every chunk needs to reach its tier; read-only.
//   run         executes a plan one step at a time under a session advisory lock, journaling each step.

export type Tier = 'hot' | 'warm' | 'cold';

export type StepKind = 'move' | 'compress' | 'move-compressed';

/** A chunk as the catalog shows it now. */
export interface ChunkState {
  /** schema-qualified name, quoted as needed: usable as a regclass literal. */
  chunk: string;
  rangeStart: Date;
  rangeEnd: Date;
  /** The chunk's tablespace; null = the database default. */
  tablespace: string | null;
  compressed: boolean;
  /** The internal compressed chunk's tablespace, when compressed. */
  compressedTablespace: string | null;
  /** Bytes on disk now (heap, indexes, toast; the compressed chunk's too). */
  bytes: number;
  /** Bytes before and after compression, for compressed chunks (from chunk_compression_stats). */
  bytesBeforeCompression: number | null;
  bytesAfterCompression: number | null;
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

export interface Boundaries {
  /** Chunks ending at or before this instant belong to warm (or older). */
  warm: Date;
  cold: Date;
  archive: Date;
}
