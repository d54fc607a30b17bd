// What the tiering and archive jobs both read: a chunk as the catalog shows it, and the tier
// boundaries at a moment (src/jobs/chunks.ts, src/jobs/policy.ts; glossary: src/tiering/types.ts).

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
  /** Compressed, with rows outside its batches or batches of merged chunks (see glossary). */
  partial: boolean;
  /** Compressed, with overlapping batches (columnstore ingest; see glossary). */
  unordered: boolean;
}

export interface Boundaries {
  /** Chunks ending at or before this instant belong to warm (or older). */
  warm: Date;
  cold: Date;
  archive: Date;
  /** Hot chunks written compressed and ending at or before this are recompressed in place; null = never (STRATA_TIER_HOT_COMPACT_AFTER=off). */
  compact: Date | null;
}
