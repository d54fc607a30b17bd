// Writer slots are shared between facilities in turn: a backlog of one facility delays another
// facility's batch by one turn, not by the whole backlog.
import { describe, expect, it } from 'vitest';
import { FairSlots } from '../../src/ingest/fair-slots.ts';

describe('fair writer slots', () => {
  it('hands a freed slot to the next facility in turn, not to the oldest waiter', async () => {
    const slots = new FairSlots(1);
    const order: string[] = [];
    await slots.acquire(1); // facility 1 holds the only slot
    const waits: Promise<void>[] = [];
    for (let i = 0; i < 5; i++) waits.push(slots.acquire(1).then(() => void order.push(`busy-${i}`)));
    waits.push(slots.acquire(2).then(() => void order.push('quiet')));
    expect(slots.waiting).toBe(6);
    const holders = [1, 1, 2, 1, 1, 1]; // who holds the slot each time it is given back
    for (let i = 0; i < 6; i++) {
      slots.release(holders[i]!);
      await Promise.resolve();
      await Promise.resolve();
    }
    await Promise.all(waits);
    // The quiet facility queued last but is served second: after one turn of the busy facility.
    expect(order).toEqual(['busy-0', 'quiet', 'busy-1', 'busy-2', 'busy-3', 'busy-4']);
    slots.release(1);
    expect(slots.inUse).toBe(0);
  });

  it('never lets more than its size hold a slot, and frees them all in the end', async () => {
    const slots = new FairSlots(3);
    let holding = 0;
    let most = 0;
    const work = Array.from({ length: 40 }, async (_, i) => {
      await slots.acquire(i % 4);
      holding++;
      most = Math.max(most, holding);
      await new Promise((r) => setTimeout(r, 1 + (i % 3)));
      holding--;
      slots.release(i % 4);
    });
    await Promise.all(work);
    expect(most).toBe(3);
    expect(slots.inUse).toBe(0);
    expect(slots.waiting).toBe(0);
  });

  it('with a reserve, keeps the last free slot for a facility with nothing in flight while others are active', async () => {
    const slots = new FairSlots(4, { reserve: true, recentMs: 60_000 });
    await slots.acquire(2); // the quiet facility has been active
    slots.release(2);
    for (let i = 0; i < 3; i++) await slots.acquire(1); // the busy one takes three
    let fourth = false;
    const waiting = slots.acquire(1).then(() => void (fourth = true));
    await Promise.resolve();
    expect(fourth).toBe(false); // not the last one
    expect(slots.inUse).toBe(3);
    await slots.acquire(2); // the quiet facility finds it free
    expect(slots.inUse).toBe(4);
    slots.release(2); // the reserve is back; the busy facility still may not take it
    await Promise.resolve();
    expect(fourth).toBe(false);
    slots.release(1); // one of its own ends: its waiter takes that slot
    await waiting;
    expect(fourth).toBe(true);
    expect(slots.inUse).toBe(3);
  });

  it('with a reserve, lets a facility alone use every slot', async () => {
    const slots = new FairSlots(4, { reserve: true, recentMs: 60_000 });
    for (let i = 0; i < 4; i++) await slots.acquire(1);
    expect(slots.inUse).toBe(4);
  });
});
