// A counting semaphore shared fairly between facilities: waiters queue per facility, and a freed
// slot goes to the next facility in turn (round robin), not to whoever queued first. A facility
// with a long backlog therefore delays another facility by one turn, not by its backlog. With
// `reserve`, a facility already holding a slot may not take the last free one while another
// facility used the slots within the last `recentMs`: a facility with nothing in flight then finds a
// slot free instead of waiting for another facility's attempt to end.

export interface FairSlotsOptions {
  /** Keep one slot for the other facilities while any of them is active (default false). */
  reserve?: boolean;
  /** How long a facility counts as active after it last took a slot (default 1 s). */
  recentMs?: number;
}

export class FairSlots {
  private active = 0;
  /** Slots held per facility; present only while it holds one. */
  private readonly held = new Map<number, number>();
  /** When each facility last took a slot (only with `reserve`). */
  private readonly lastTook = new Map<number, number>();
  /** Waiters per facility, in arrival order; a facility is present only while it has waiters. */
  private readonly queues = new Map<number, (() => void)[]>();
  /** Facilities with waiters, in the order they are served next. */
  private readonly turn: number[] = [];

  constructor(
    private readonly size: number,
    private readonly opts: FairSlotsOptions = {},
  ) {}

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

  /** Resolves once the caller holds a slot; call release(facilityId) exactly once afterwards. */
  acquire(facilityId: number): Promise<void> {
    if (this.active < this.size && this.turn.length === 0 && this.mayTake(facilityId)) {
      this.take(facilityId);
      return Promise.resolve();
    }
    const granted = new Promise<void>((resolve) => {
      let q = this.queues.get(facilityId);
      if (!q) {
        q = [];
        this.queues.set(facilityId, q);
        this.turn.push(facilityId);
      }
      q.push(resolve);
    });
    // A slot may be free that the waiters before it may not take (the reserve).
    this.serve();
    return granted;
  }

  /** Gives the slot back: to the next facility in turn that may take it, or frees it. */
  release(facilityId: number): void {
    const now = (this.held.get(facilityId) ?? 1) - 1;
    if (now > 0) this.held.set(facilityId, now);
    else this.held.delete(facilityId);
    this.active--;
    this.serve();
  }

  /** Hands free slots to waiters, in turn, skipping facilities that may not take one now. */
  private serve(): void {
    for (let scanned = 0; this.active < this.size && scanned < this.turn.length; ) {
      const facilityId = this.turn[0]!;
      if (!this.mayTake(facilityId)) {
        this.turn.push(this.turn.shift()!);
        scanned++;
        continue;
      }
      this.turn.shift();
      const q = this.queues.get(facilityId)!;
      const next = q.shift()!;
      if (q.length > 0) this.turn.push(facilityId);
      else this.queues.delete(facilityId);
      this.take(facilityId);
      scanned = 0;
      next();
    }
  }

  private take(facilityId: number): void {
    this.active++;
    this.held.set(facilityId, (this.held.get(facilityId) ?? 0) + 1);
    if (this.opts.reserve) this.lastTook.set(facilityId, performance.now());
  }

  /**
   * Whether the facility may take a free slot now: the last one only if it holds none (the reserve
   * is for a facility with nothing in flight) or no other facility is active.
   */
  private mayTake(facilityId: number): boolean {
    if (!this.opts.reserve || this.size < 2 || this.active < this.size - 1 || !this.held.has(facilityId)) return true;
    return !this.othersActive(facilityId);
  }

  private othersActive(facilityId: number): boolean {
    const since = performance.now() - (this.opts.recentMs ?? 1_000);
    let others = false;
    for (const [id, at] of this.lastTook) {
      if (at < since && !this.held.has(id) && !this.queues.has(id)) this.lastTook.delete(id);
      else if (id !== facilityId) others = true;
    }
    return others;
  }
}
