// A facility's series ids by key bytes (series-key.ts), without a string or an object per entry:
// keys live in one growing byte arena, entries in typed arrays, and an open-addressing table of
// entry numbers finds them by hash + byte compare. Besides canonical keys it holds aliases: the
// bytes of a line whose tags arrived unsorted, so that line is found as sent next time.

import { SPACE } from './ascii.ts';

const EMPTY = -1;

/** Mixes the FNV hash's bits so a power-of-two table uses all of them (murmur3's finaliser). */
function mix(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

export const viewOf = (b: Uint8Array) => new DataView(b.buffer, b.byteOffset, b.byteLength);

export class SeriesIndex {
  /** Canonical series (aliases not counted). */
  series = 0;
  aliases = 0;
  private arena: Buffer = Buffer.allocUnsafe(1 << 16);
  private arenaView = viewOf(this.arena);
  private used = 0;
  private count = 0;
  private offsets = new Int32Array(1024);
  private lengths = new Int32Array(1024);
  private ids = new Int32Array(1024);
  private hashes = new Int32Array(1024);
  private slots = new Int32Array(2048).fill(EMPTY);

  /**
   * The id of the key `src[hs, he) + ' ' + src[fs, fe)` whose FNV hash is `hash`, or -1.
   * The head and the field key are compared in place, so a line is looked up without a copy;
   * `view` is a DataView of `src`, so the head is compared four bytes at a time.
   */
  find(hash: number, src: Uint8Array, view: DataView, hs: number, he: number, fs: number, fe: number): number {
    const headLen = he - hs;
    const len = headLen + 1 + (fe - fs);
    const slots = this.slots;
    const mask = slots.length - 1;
    for (let slot = mix(hash) & mask; ; slot = (slot + 1) & mask) {
      const e = slots[slot]!;
      if (e === EMPTY) return -1;
      if (this.hashes[e] === hash && this.lengths[e] === len && this.same(this.offsets[e]!, src, view, hs, headLen, fs, fe)) return this.ids[e]!;
    }
  }

  private same(o: number, src: Uint8Array, view: DataView, hs: number, headLen: number, fs: number, fe: number): boolean {
    const arena = this.arena;
    const words = this.arenaView;
    let i = 0;
    for (; i + 4 <= headLen; i += 4) if (words.getInt32(o + i) !== view.getInt32(hs + i)) return false;
    for (; i < headLen; i++) if (arena[o + i] !== src[hs + i]) return false;
    if (arena[o + headLen] !== SPACE) return false;
    const a = o + headLen + 1 - fs;
    for (let i = fs; i < fe; i++) if (arena[a + i] !== src[i]) return false;
    return true;
  }

  /** The id of a whole key, or -1. (find() compares head + space + field as one run of bytes, so any space of the key splits it.) */
  get(key: Uint8Array, hash: number): number {
    const sp = key.indexOf(SPACE);
    return sp < 0 ? -1 : this.find(hash, key, viewOf(key), 0, sp, sp + 1, key.length);
  }

  /** Adds a key (canonical unless `alias`); a key already present keeps its id. */
  add(key: Uint8Array, hash: number, id: number, alias = false): void {
    if (this.get(key, hash) !== -1) return;
    if (this.count === this.ids.length) this.growEntries();
    if ((this.count + 1) * 2 > this.slots.length) this.rehash(this.slots.length * 2);
    if (this.used + key.length > this.arena.length) {
      const next = Buffer.allocUnsafe(Math.max(this.arena.length * 2, this.used + key.length));
      this.arena.copy(next, 0, 0, this.used);
      this.arena = next;
      this.arenaView = viewOf(next);
    }
    this.arena.set(key, this.used);
    const e = this.count++;
    this.offsets[e] = this.used;
    this.lengths[e] = key.length;
    this.ids[e] = id;
    this.used += key.length;
    this.place(e, hash);
    if (alias) this.aliases++;
    else this.series++;
  }

  private place(e: number, hash: number): void {
    this.hashes[e] = hash;
    const mask = this.slots.length - 1;
    let slot = mix(hash) & mask;
    while (this.slots[slot] !== EMPTY) slot = (slot + 1) & mask;
    this.slots[slot] = e;
  }

  private growEntries(): void {
    const grow = (a: Int32Array) => {
      const b = new Int32Array(a.length * 2);
      b.set(a);
      return b;
    };
    this.offsets = grow(this.offsets);
    this.lengths = grow(this.lengths);
    this.ids = grow(this.ids);
    this.hashes = grow(this.hashes);
  }

  private rehash(size: number): void {
    this.slots = new Int32Array(size).fill(EMPTY);
    for (let e = 0; e < this.count; e++) this.place(e, this.hashes[e]!);
  }
}
