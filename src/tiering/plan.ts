// The plan: which tier each chunk belongs to and the steps that take it there. Pure functions of
// the catalog state (catalog.ts) and the boundaries (policy.ts); nothing here touches the database.
import { mergeUnitMs, type TierPolicy } from '../jobs/policy.ts';
import type { Boundaries, ChunkPlan, ChunkState, Merge, Step, Tier } from './types.ts';

/** The tier a chunk's range puts it in: by its end, so a chunk straddling a boundary stays in the newer tier. */
export function targetTier(rangeEnd: Date, b: Boundaries): Tier {
  const end = rangeEnd.getTime();
  if (end > b.warm.getTime()) return 'hot';
  if (end > b.cold.getTime()) return 'warm';
  return 'cold';
}

/** The tier a chunk is in now, from where it lives and whether it is compressed. */
export function currentTier(c: ChunkState, policy: TierPolicy): Tier {
  if (c.compressed && c.tablespace === policy.coldTablespace && c.compressedTablespace === policy.coldTablespace) return 'cold';
  if (c.compressed && c.tablespace === policy.warmTablespace && c.compressedTablespace === policy.warmTablespace) return 'warm';
  if (!c.compressed && c.tablespace === null) return 'hot';
  // In between (moved but not yet compressed, say): name it by where the row data is.
  if (c.tablespace === policy.coldTablespace) return 'cold';
  if (c.tablespace === policy.warmTablespace) return 'warm';
  return 'hot';
}

/**
 * The steps from the chunk's state to its tier's. Hot chunks are never touched. For warm and cold:
 * an uncompressed chunk is first moved (a rewrite in index order, which also makes compression
 * cheaper), then compressed; a compressed chunk anywhere else is moved with its compressed chunk,
 * and recompressed if it is partial or unordered (written compressed by the columnstore ingest).
 * A hot chunk written compressed stays where it is; once due for compaction (`compact`, see
 * compactDue) it is compacted there if partial or unordered. A hot row-store chunk is never touched.
 */
export function stepsFor(c: ChunkState, target: Tier, policy: TierPolicy, compact = false): Step[] {
  if (target === 'hot') return compact && c.compressed && (c.partial || c.unordered) ? [{ kind: 'compact' }] : [];
  const ts = target === 'warm' ? policy.warmTablespace : policy.coldTablespace;
  const steps: Step[] = [];
  if (!c.compressed) {
    if (c.tablespace !== ts) steps.push({ kind: 'move', tablespace: ts });
    steps.push({ kind: 'compress' });
    return steps;
  }
  if (c.tablespace !== ts || c.compressedTablespace !== ts) steps.push({ kind: 'move-compressed', tablespace: ts });
  if (c.partial || c.unordered) steps.push({ kind: 'recompress' });
  return steps;
}

/**
 * Runs of adjacent cold chunks with nothing else left to do that lie within one merge unit (UTC,
 * counted from the epoch: whole days for "1 day"); runs of one chunk are left alone.
 */
export function mergesFor(plans: readonly ChunkPlan[], policy: TierPolicy): Merge[] {
  const unit = mergeUnitMs(policy);
  if (!unit) return [];
  const merges: Merge[] = [];
  let run: ChunkPlan[] = [];
  const flush = () => {
    if (run.length > 1) merges.push({ rangeStart: run[0]!.chunk.rangeStart, rangeEnd: run.at(-1)!.chunk.rangeEnd, chunks: run.map((p) => p.chunk.chunk), bytes: run.reduce((n, p) => n + p.chunk.bytes, 0) });
    run = [];
  };
  for (const p of plans) {
    const start = p.chunk.rangeStart.getTime();
    const settled = p.target === 'cold' && p.steps.length === 0 && Math.floor(start / unit) === Math.floor((p.chunk.rangeEnd.getTime() - 1) / unit);
    const last = run.at(-1);
    if (!settled || (last && (last.chunk.rangeEnd.getTime() !== start || Math.floor(last.chunk.rangeStart.getTime() / unit) !== Math.floor(start / unit)))) flush();
    if (settled) run.push(p);
  }
  flush();
  return merges;
}

/** Whether a hot chunk's range ended long enough ago to be compacted (STRATA_TIER_HOT_COMPACT_AFTER). */
export const compactDue = (rangeEnd: Date, b: Boundaries): boolean => b.compact !== null && rangeEnd.getTime() <= b.compact.getTime();

export function planChunk(c: ChunkState, b: Boundaries, policy: TierPolicy): ChunkPlan {
  const target = targetTier(c.rangeEnd, b);
  return { chunk: c, current: currentTier(c, policy), target, archiveDue: c.rangeEnd.getTime() <= b.archive.getTime(), steps: stepsFor(c, target, policy, compactDue(c.rangeEnd, b)) };
}

/** Bytes before ÷ after compression over the compressed chunks given; null when there are none. */
export function compressionRatio(chunks: readonly ChunkState[]): number | null {
  const compressed = chunks.filter((c) => c.compressed && c.bytesBeforeCompression && c.bytesAfterCompression);
  const after = compressed.reduce((n, c) => n + c.bytesAfterCompression!, 0);
  return after > 0 ? compressed.reduce((n, c) => n + c.bytesBeforeCompression!, 0) / after : null;
}

export interface PlanTotals {
  chunks: number;
  chunksWithSteps: number;
  steps: number;
  /** Bytes that move between tablespaces (uncompressed chunks count at their current size). */
  bytesToMove: number;
  /** Bytes saved by the planned compressions, at the ratio already reached on this hypertable. */
  expectedSavings: number;
  /** The ratio used for expectedSavings (before ÷ after of the chunks compressed so far), or null with none yet. */
  compressionRatio: number | null;
  archiveDue: number;
  byTier: Record<Tier, { chunks: number; bytes: number }>;
}

export interface Plan {
  boundaries: Boundaries;
  chunks: ChunkPlan[];
  /** Cold merges possible now (chunks still needing steps join them on a later run). */
  merges: Merge[];
  totals: PlanTotals;
}

export function plan(chunks: readonly ChunkState[], b: Boundaries, policy: TierPolicy): Plan {
  const plans = [...chunks].sort((x, y) => x.rangeStart.getTime() - y.rangeStart.getTime()).map((c) => planChunk(c, b, policy));
  const ratio = compressionRatio(chunks);
  const byTier: PlanTotals['byTier'] = { hot: { chunks: 0, bytes: 0 }, warm: { chunks: 0, bytes: 0 }, cold: { chunks: 0, bytes: 0 } };
  let bytesToMove = 0;
  let expectedSavings = 0;
  for (const p of plans) {
    byTier[p.current].chunks++;
    byTier[p.current].bytes += p.chunk.bytes;
    if (p.steps.some((s) => s.kind !== 'compress')) bytesToMove += p.chunk.bytes;
    if (p.steps.some((s) => s.kind === 'compress') && ratio) expectedSavings += p.chunk.bytes - p.chunk.bytes / ratio;
  }
  const merges = mergesFor(plans, policy);
  return {
    boundaries: b,
    chunks: plans,
    merges,
    totals: {
      chunks: plans.length,
      chunksWithSteps: plans.filter((p) => p.steps.length > 0).length,
      steps: plans.reduce((n, p) => n + p.steps.length, 0) + merges.length,
      bytesToMove,
      expectedSavings: Math.round(expectedSavings),
      compressionRatio: ratio,
      archiveDue: plans.filter((p) => p.archiveDue).length,
      byTier,
    },
  };
}
