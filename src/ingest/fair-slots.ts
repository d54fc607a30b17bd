// A counting semaphore shared fairly between facilities: waiters queue per facility, and a freed
// slot goes to the next facility in turn (round robin), not to whoever queued first. A facility
// with a long backlog therefore delays another facility by one turn, not by its backlog.

export class FairSlots {
  private active = 0;
  /** Waiters per facility, in arrival order; a facility is present only while it has waiters. */
  private readonly queues = new Map<number, (() => void)[]>();
  /** Facilities with waiters, in the order they are served next. */
  private readonly turn: number[] = [];

  constructor(private readonly size: number) {}

  /** Slots in use. */
  get inUse(): number {
    return this.active;
  }

  /** Waiters across facilities. */
  get waiting(): number {
    let n = 0;
    for (const q of this.queues.values()) n += q.length;
    return n;
  }

  /** Resolves once the caller holds a slot; call release() exactly once afterwards. */
  acquire(facilityId: number): Promise<void> {
    if (this.active < this.size && this.turn.length === 0) {
      this.active++;
      return Promise.resolve();
    }
    return new Promise<void>((resolve) => {
      let q = this.queues.get(facilityId);
      if (!q) {
        q = [];
        this.queues.set(facilityId, q);
        this.turn.push(facilityId);
      }
      q.push(resolve);
    });
  }

  /** Hands the slot to the next facility's oldest waiter, or frees it. */
  release(): void {
    const facilityId = this.turn.shift();
    if (facilityId === undefined) {
      this.active--;
      return;
    }
    const q = this.queues.get(facilityId)!;
    const next = q.shift()!;
    if (q.length > 0) this.turn.push(facilityId);
    else this.queues.delete(facilityId);
    next(); // the slot passes straight to it
  }
}
