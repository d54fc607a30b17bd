// The per-facility batcher: flushes by rows or age, at most maxInFlight flushes at once, whole
// requests per batch, and drain() flushes everything and waits for it.
import { describe, expect, it } from 'vitest';
import { Batcher, type Batch, type PartOutcome } from '../../src/ingest/batcher.ts';

function harness(maxInFlight: number, maxRows = 100, maxAgeMs = 10_000) {
  const flushes: { batch: Batch; finish: () => void }[] = [];
  let concurrent = 0;
  let peak = 0;
  const b = new Batcher(1, { maxRows, maxAgeMs, maxInFlight }, (batch) => {
    concurrent++;
    peak = Math.max(peak, concurrent);
    let finished = false;
    return new Promise<void>((resolve) =>
      flushes.push({
        batch,
        finish: () => {
          if (finished) return;
          finished = true;
          concurrent--;
          for (const p of batch.parts) p.done({ ok: true, via: 'db' });
          resolve();
        },
      }),
    );
  });
  const outcomes: PartOutcome[] = [];
  const add = (rows: number) => b.add({ rows: Buffer.alloc(rows), rowCount: rows, done: (o) => outcomes.push(o) });
  return { b, flushes, add, outcomes, peak: () => peak };
}

const tick = () => new Promise((r) => setImmediate(r));

describe('batcher', () => {
  it('runs at most maxInFlight flushes of a facility at once, and the next when one finishes', async () => {
    const h = harness(2);
    for (let i = 0; i < 5; i++) h.add(100); // each part fills a batch
    await tick();
    expect(h.flushes).toHaveLength(2);
    h.flushes[0]!.finish();
    await tick();
    expect(h.flushes).toHaveLength(3);
    while (h.outcomes.length < 5) {
      for (const f of h.flushes) f.finish();
      await tick();
    }
    expect(h.flushes).toHaveLength(5);
    expect(h.peak()).toBe(2);
  });

  it('keeps a request whole: a batch holds whole parts up to maxRows, a larger part goes alone', async () => {
    const h = harness(1);
    h.add(60);
    h.add(30); // 90 < 100: waits for age or more rows
    h.add(500); // over the limit on its own
    await tick();
    expect(h.flushes.map((f) => f.batch.rowCount)).toEqual([90]);
    h.flushes[0]!.finish();
    await tick();
    expect(h.flushes.map((f) => f.batch.rowCount)).toEqual([90, 500]);
    h.flushes[1]!.finish();
    await tick();
    expect(h.outcomes).toHaveLength(3);
  });

  it('flushes on age, and drain() flushes what is pending and waits for every flush', async () => {
    const h = harness(2, 1_000, 20);
    h.add(5);
    await new Promise((r) => setTimeout(r, 60));
    expect(h.flushes).toHaveLength(1);
    h.add(7);
    let drained = false;
    const d = h.b.drain().then(() => (drained = true));
    await tick();
    expect(h.flushes).toHaveLength(2); // pending rows flushed at once, without waiting for the age
    expect(drained).toBe(false);
    for (const f of h.flushes) f.finish();
    await d;
    expect(h.outcomes).toEqual([{ ok: true, via: 'db' }, { ok: true, via: 'db' }]);
  });

  it("counts a waiting part's age from when it arrived, not from the last flush", async () => {
    const age = 300;
    const h = harness(1, 10, age);
    h.add(10); // a full batch: flushed at once
    await tick();
    expect(h.flushes).toHaveLength(1);
    h.add(10); // waits: the only flush slot is busy
    h.add(3); // a leftover that arrived now, behind it
    const leftoverArrived = Date.now();
    await new Promise((r) => setTimeout(r, age + 50)); // the leftover is now older than the batch age
    h.flushes[0]!.finish(); // the full part goes next; the leftover stays behind it
    await tick();
    expect(h.flushes).toHaveLength(2);
    expect(h.flushes[1]!.batch.rowCount).toBe(10);
    h.flushes[1]!.finish();
    await tick();
    // Already past its age: it goes as soon as the slot is free, not a whole age after that flush.
    expect(h.flushes).toHaveLength(3);
    expect(h.flushes[2]!.batch.rowCount).toBe(3);
    expect(Date.now() - leftoverArrived).toBeGreaterThanOrEqual(age);
    h.flushes[2]!.finish();
  });
});
