// The tier plan at its boundaries: a chunk belongs to a tier once its whole range is older than the
// boundary (a chunk straddling one stays in the newer tier), hot chunks get no steps but the
// compaction of chunks written compressed, and every
// state a chunk can be in gets the steps that lead to its tier's state.
import { describe, expect, it } from 'vitest';
import { parseWindow, inWindow } from '../../src/tiering/window.ts';
import { plan, planChunk, stepsFor, targetTier } from '../../src/tiering/plan.ts';
import { tierPolicy } from '../../src/jobs/policy.ts';
import type { Boundaries, ChunkState } from '../../src/tiering/types.ts';

const policy = tierPolicy({});
const at = (iso: string) => new Date(iso);
const b: Boundaries = { warm: at('2026-10-22T00:00:00Z'), cold: at('2026-05-25T00:00:00Z'), archive: at('2025-05-21T00:00:00Z'), compact: at('2026-11-21T00:00:00Z') };
const DAY = 86_400_000;

function chunk(start: Date, end: Date, o: Partial<ChunkState> = {}): ChunkState {
  return { chunk: `_timescaledb_internal._hyper_1_${start.getTime()}_chunk`, rangeStart: start, rangeEnd: end, tablespace: null, compressed: false, compressedTablespace: null, bytes: 1_000_000, bytesBeforeCompression: null, bytesAfterCompression: null, partial: false, unordered: false, ...o };
}

describe('tier of a chunk', () => {
  it('is decided by the end of its range, inclusive of the boundary instant', () => {
    expect(targetTier(b.warm, b)).toBe('warm');
    expect(targetTier(new Date(b.warm.getTime() + 1), b)).toBe('hot');
    expect(targetTier(b.cold, b)).toBe('cold');
    expect(targetTier(new Date(b.cold.getTime() + 1), b)).toBe('warm');
    expect(targetTier(new Date(b.archive.getTime() - DAY), b)).toBe('cold');
  });

  it('keeps a chunk straddling a boundary in the newer tier', () => {
    const straddlesWarm = chunk(new Date(b.warm.getTime() - DAY), new Date(b.warm.getTime() + DAY));
    const straddlesCold = chunk(new Date(b.cold.getTime() - DAY), new Date(b.cold.getTime() + DAY));
    const straddlesArchive = chunk(new Date(b.archive.getTime() - DAY), new Date(b.archive.getTime() + DAY));
    expect(planChunk(straddlesWarm, b, policy)).toMatchObject({ target: 'hot', steps: [] });
    expect(planChunk(straddlesCold, b, policy)).toMatchObject({ target: 'warm' });
    expect(planChunk(straddlesArchive, b, policy)).toMatchObject({ target: 'cold', archiveDue: false });
    expect(planChunk(chunk(new Date(b.archive.getTime() - 2 * DAY), b.archive), b, policy).archiveDue).toBe(true);
  });

  it('never plans a step for a hot chunk that was not written compressed, whatever its state', () => {
    const hot = [chunk(b.warm, new Date(b.warm.getTime() + DAY)), chunk(b.warm, new Date(b.warm.getTime() + DAY), { compressed: true, tablespace: 'cold_data', compressedTablespace: null })];
    for (const c of hot) expect(planChunk(c, b, policy).steps).toEqual([]);
  });
});

describe('steps to a tier', () => {
  const old = (o: Partial<ChunkState>) => chunk(new Date(b.cold.getTime() - 8 * DAY), new Date(b.cold.getTime() - DAY), o);
  it('moves an uncompressed chunk, reordered, then compresses it', () => {
    expect(stepsFor(old({}), 'warm', policy)).toEqual([{ kind: 'move', tablespace: 'warm_data' }, { kind: 'compress' }]);
    expect(stepsFor(old({ tablespace: 'cold_data' }), 'cold', policy)).toEqual([{ kind: 'compress' }]);
  });
  it('moves a compressed chunk together with its compressed chunk, when either is elsewhere', () => {
    expect(stepsFor(old({ compressed: true, tablespace: 'warm_data', compressedTablespace: 'warm_data' }), 'cold', policy)).toEqual([{ kind: 'move-compressed', tablespace: 'cold_data' }]);
    expect(stepsFor(old({ compressed: true, tablespace: 'cold_data', compressedTablespace: null }), 'cold', policy)).toEqual([{ kind: 'move-compressed', tablespace: 'cold_data' }]);
    expect(stepsFor(old({ compressed: true, tablespace: null, compressedTablespace: null }), 'warm', policy)).toEqual([{ kind: 'move-compressed', tablespace: 'warm_data' }]);
  });
  it('plans nothing for a chunk already in its tier', () => {
    expect(stepsFor(old({ compressed: true, tablespace: 'cold_data', compressedTablespace: 'cold_data' }), 'cold', policy)).toEqual([]);
  });
  it('recompresses a partial chunk (late rows, or just merged), after any move', () => {
    expect(stepsFor(old({ compressed: true, partial: true, tablespace: 'cold_data', compressedTablespace: 'cold_data' }), 'cold', policy)).toEqual([{ kind: 'recompress' }]);
    expect(stepsFor(old({ compressed: true, partial: true, tablespace: 'warm_data', compressedTablespace: 'warm_data' }), 'cold', policy)).toEqual([{ kind: 'move-compressed', tablespace: 'cold_data' }, { kind: 'recompress' }]);
  });
  it('compacts a chunk written compressed (columnstore ingest) in hot once its range ended by the compaction boundary, and moves and recompresses it on the way to warm', () => {
    const direct = { compressed: true, unordered: true, tablespace: null, compressedTablespace: null };
    const H = 3_600_000;
    const endingAt = (end: number, o: Partial<ChunkState>) => chunk(new Date(end - H), new Date(end), o);
    const due = b.compact!.getTime();
    expect(planChunk(endingAt(due, direct), b, policy)).toMatchObject({ current: 'hot', target: 'hot', steps: [{ kind: 'compact' }] });
    expect(planChunk(endingAt(due, { ...direct, unordered: false, partial: true }), b, policy).steps).toEqual([{ kind: 'compact' }]);
    // Still open to writes (ends after the boundary), already compacted, or compaction off: left alone.
    expect(planChunk(endingAt(due + 1, direct), b, policy).steps).toEqual([]);
    expect(planChunk(endingAt(due, { ...direct, unordered: false }), b, policy).steps).toEqual([]);
    expect(planChunk(endingAt(due, direct), { ...b, compact: null }, policy).steps).toEqual([]);
    // A hot row-store chunk (rowstore mode) is never compressed by compaction.
    expect(planChunk(endingAt(due, {}), b, policy).steps).toEqual([]);
    expect(stepsFor(old(direct), 'warm', policy)).toEqual([{ kind: 'move-compressed', tablespace: 'warm_data' }, { kind: 'recompress' }]);
  });
});

describe('cold merges', () => {
  const H = 3_600_000;
  const day = Date.UTC(2025, 0, 10);
  const settled = { compressed: true, tablespace: 'cold_data', compressedTablespace: 'cold_data' };
  const hours = (from: number, n: number, o: Partial<ChunkState> = settled) => Array.from({ length: n }, (_, i) => chunk(new Date(day + (from + i) * 6 * H), new Date(day + (from + i + 1) * 6 * H), o));
  it('merges adjacent settled cold chunks within one UTC day, one merge per day', () => {
    const p = plan([...hours(0, 4), ...hours(4, 4)], b, policy);
    expect(p.merges.map((m) => [m.rangeStart.toISOString(), m.rangeEnd.toISOString(), m.chunks.length])).toEqual([
      ['2025-01-10T00:00:00.000Z', '2025-01-11T00:00:00.000Z', 4],
      ['2025-01-11T00:00:00.000Z', '2025-01-12T00:00:00.000Z', 4],
    ]);
    expect(p.totals.steps).toBe(2);
  });
  it('splits a day at a gap, waits for chunks with steps left, and leaves single chunks and warm chunks alone', () => {
    const gap = [...hours(0, 2), ...hours(3, 1)];
    expect(plan(gap, b, policy).merges.map((m) => m.chunks.length)).toEqual([2]);
    const unsettled = [...hours(0, 2), ...hours(2, 2, { compressed: false, tablespace: 'cold_data', compressedTablespace: null })];
    expect(plan(unsettled, b, policy).merges.map((m) => m.chunks.length)).toEqual([2]);
    expect(plan(hours(0, 1), b, policy).merges).toEqual([]);
    const warm = Array.from({ length: 4 }, (_, i) => chunk(new Date(b.cold.getTime() + i * 6 * H), new Date(b.cold.getTime() + (i + 1) * 6 * H), { compressed: true, tablespace: 'warm_data', compressedTablespace: 'warm_data' }));
    expect(plan(warm, b, policy).merges).toEqual([]);
  });
  it('follows the merge unit, and merges nothing when it is off', () => {
    expect(plan(hours(0, 4), b, tierPolicy({ coldMerge: '12 hours' })).merges.map((m) => m.chunks.length)).toEqual([2, 2]);
    expect(plan(hours(0, 4), b, tierPolicy({ coldMerge: 'off' })).merges).toEqual([]);
    expect(() => tierPolicy({ coldMerge: '1 week' })).toThrow(/must be a whole number of hours or days, such as/);
  });
});

describe('plan totals', () => {
  it('counts chunks and bytes per current tier, bytes to move and the savings at the ratio reached so far', () => {
    const p = plan(
      [
        chunk(new Date(b.warm.getTime() - 2 * DAY), new Date(b.warm.getTime() - DAY), { bytes: 10_000_000 }),
        chunk(new Date(b.cold.getTime() - 2 * DAY), new Date(b.cold.getTime() - DAY), { compressed: true, tablespace: 'warm_data', compressedTablespace: 'warm_data', bytes: 600_000, bytesBeforeCompression: 10_000_000, bytesAfterCompression: 500_000 }),
        chunk(new Date(b.warm.getTime()), new Date(b.warm.getTime() + DAY), { bytes: 7_000_000 }),
      ],
      b,
      policy,
    );
    expect(p.totals).toMatchObject({ chunks: 3, chunksWithSteps: 2, steps: 3, bytesToMove: 10_600_000, compressionRatio: 20, expectedSavings: 9_500_000 });
    expect(p.totals.byTier).toEqual({ hot: { chunks: 2, bytes: 17_000_000 }, warm: { chunks: 1, bytes: 600_000 }, cold: { chunks: 0, bytes: 0 } });
    expect(p.chunks.map((c) => c.target)).toEqual(['cold', 'warm', 'hot']);
  });
});

describe('policy and window', () => {
  it('rejects ages out of order and a shared tablespace, naming each', () => {
    expect(() => tierPolicy({ warmAfter: '200 days' })).toThrow('the cold age (180 days) must be longer than the warm age (200 days)');
    expect(() => tierPolicy({ archiveAfter: '3 months' })).toThrow('the archive age (3 months) must be longer than the cold age (180 days)');
    expect(() => tierPolicy({ coldTablespace: 'warm_data' })).toThrow('the warm and cold tablespaces must differ (both are "warm_data")');
    expect(() => tierPolicy({ warmAfter: '30 fortnights' })).toThrow(/whole number of days, weeks, months or years/);
  });
  it('parses a UTC window, including one across midnight', () => {
    const night = parseWindow('22:00-04:30');
    expect(inWindow(night, at('2026-01-01T23:59:00Z'))).toBe(true);
    expect(inWindow(night, at('2026-01-01T04:29:00Z'))).toBe(true);
    expect(inWindow(night, at('2026-01-01T04:30:00Z'))).toBe(false);
    expect(inWindow(parseWindow('01:00-05:00'), at('2026-01-01T00:59:59Z'))).toBe(false);
    expect(() => parseWindow('1-5')).toThrow('maintenance window "1-5": must be HH:MM-HH:MM in UTC');
  });
});
