// `strata archive plan`: read-only. Every chunk whose range ended before the archive boundary, with
// its catalog state and the steps left: export-upload (export, package, upload), verify, drop.
// Nothing newer than the boundary is ever listed, whatever the catalog says.
import type { Queryable } from '../../db/port.ts';
import { readChunks } from '../../jobs/chunks.ts';
import type { ChunkState } from '../../jobs/types.ts';
import { entryFor, type Entry } from './catalog.ts';

export type ArchiveStep = 'export-upload' | 'verify' | 'drop';

export interface ArchiveChunkPlan {
  chunk: ChunkState;
  entry: Entry | null;
  steps: ArchiveStep[];
  /** Why a due chunk has no steps (its range was archived and dropped once, and has rows again). */
  note?: string;
}

export interface ArchivePlan {
  boundary: Date;
  chunks: ArchiveChunkPlan[];
  totals: { chunks: number; bytes: number; steps: number };
}

export function archiveSteps(entry: Entry | null): ArchiveStep[] {
  switch (entry?.state ?? null) {
    case null:
    case 'uploading':
      return ['export-upload', 'verify', 'drop'];
    case 'uploaded':
      return ['verify', 'drop'];
    case 'verified':
      return ['drop'];
    default:
      return [];
  }
}

export async function archivePlan(db: Queryable, hypertable: string, boundary: Date): Promise<ArchivePlan> {
  const due = (await readChunks(db, hypertable)).filter((c) => c.rangeEnd.getTime() <= boundary.getTime());
  const chunks: ArchiveChunkPlan[] = [];
  for (const chunk of due) {
    const entry = await entryFor(db, hypertable, chunk.rangeStart, chunk.rangeEnd);
    const steps = archiveSteps(entry);
    const p: ArchiveChunkPlan = { chunk, entry, steps };
    if (entry && steps.length === 0) p.note = `archived as ${entry.key} (${entry.state}) and dropped, but the range has rows again (late rows or a restore into the hypertable); not archived twice`;
    chunks.push(p);
  }
  const todo = chunks.filter((c) => c.steps.length > 0);
  return { boundary, chunks, totals: { chunks: todo.length, bytes: todo.reduce((s, c) => s + c.chunk.bytes, 0), steps: todo.reduce((s, c) => s + c.steps.length, 0) } };
}
