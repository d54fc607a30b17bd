// The series catalog cache: (facility, measurement, field key, tag set) → series_id.
// A facility's series are loaded on first use into a SeriesIndex (canonical key bytes, series-key.ts)
// that the fast path reads directly; unknown ones are created in one statement per request,
// serialized per facility so concurrent requests never race each other.
// The series limit is the database's to hold (strata.create_series, sql/0009): creators of one
// facility take turns on its counter row across all gateways.
// A key is refused per line, never per request: over the facility's series limit, longer than the
// key limit, or refused by the database for its data (SQLSTATE class 22, 23 or 54; found by bisecting
// the statement's keys, so the other keys of the request are still created).
import type { Queryable } from '../db/port.ts';
import { errorText } from '../errors.ts';
import type { Logger } from '../log.ts';
import { classify } from './classify.ts';
import { SeriesIndex } from './series-index.ts';
import { canonicalKey, keyHash } from './series-key.ts';

export interface SeriesKey {
  measurement: string;
  field: string;
  tags: readonly (readonly [string, string])[];
}

export interface Resolved {
  /** Per key: the series id, or null when it was refused. */
  ids: (number | null)[];
  /** Per key: why it was refused (null when it has an id). */
  reasons: (string | null)[];
  /** Per key: refused by the facility's series limit. */
  limited: boolean[];
  created: number;
}

export interface SeriesLimits {
  /** Series per facility. */
  series: number;
  /** Bytes of a series key, counted by seriesKeyBytes(). */
  keyBytes: number;
}

/** The default key limit: with the row's other columns it stays under the btree's 2,704-byte index row limit. */
export const DEFAULT_MAX_SERIES_KEY_BYTES = 2048;

/** Storage overhead counted for each tag (jsonb entry headers) in a key's size. */
export const TAG_OVERHEAD_BYTES = 8;

/** A key's size against the limit: UTF-8 bytes of measurement, field key, tag keys and values, plus 8 per tag. */
export function seriesKeyBytes(k: SeriesKey): number {
  let n = Buffer.byteLength(k.measurement) + Buffer.byteLength(k.field);
  for (const [key, value] of k.tags) n += Buffer.byteLength(key) + Buffer.byteLength(value) + TAG_OVERHEAD_BYTES;
  return n;
}

interface FacilitySeries {
  index: SeriesIndex;
  chain: Promise<unknown>;
  loaded: boolean;
}

interface Wanted {
  key: SeriesKey;
  bytes: Buffer;
  hash: number;
  /** Why it was refused, once it is. */
  reason: string | null;
  limited: boolean;
}


type Row = { id: number; measurement: string; field: string; tags: Record<string, string> };

// Ids for keys, new ones created while the facility is under the limit. Each row answers with the
// ordinal of its input key, so the caller's key bytes are reused and no tags are parsed back; a key
// left unanswered was not created because of the limit.
const CREATE = 'SELECT n, id, created FROM strata.create_series($1, $2, $3::text[], $4::text[], $5::text[])';

/** Keys per CREATE statement: bounds the statement's parameters and answer in memory. */
const CREATE_CHUNK = 10_000;

const SELECT_ALL = 'SELECT id, measurement, field, tags FROM strata.series WHERE facility_id = $1';


const describeKey = (k: SeriesKey) => `${k.measurement.slice(0, 60)}${k.measurement.length > 60 ? '…' : ''}.${k.field.slice(0, 60)}`;

export class SeriesCatalog {
  private facilities = new Map<number, FacilitySeries>();

  constructor(
    private readonly db: Queryable,
    private readonly limits: SeriesLimits,
    private readonly log: Logger,
  ) {}

  /** Cached series count of a facility (after its first request). */
  count(facilityId: number): number {
    return this.facilities.get(facilityId)?.index.series ?? 0;
  }

  /** The facility's loaded index for the fast path, or null before its first request. */
  index(facilityId: number): SeriesIndex | null {
    const f = this.facilities.get(facilityId);
    return f?.loaded ? f.index : null;
  }

  /** How many more aliases (unsorted tag orders) the facility's index may keep. */
  aliasRoom(facilityId: number): number {
    const f = this.facilities.get(facilityId);
    return f ? Math.max(0, Math.max(1024, f.index.series) - f.index.aliases) : 0;
  }

  /** Ids for `keys` of facility `code` (named in the reasons), creating the new ones. */
  resolve(facilityId: number, code: string, keys: readonly SeriesKey[]): Promise<Resolved> {
    let f = this.facilities.get(facilityId);
    if (!f) {
      f = { index: new SeriesIndex(), chain: Promise.resolve(), loaded: false };
      this.facilities.set(facilityId, f);
    }
    const state = f;
    const run = state.chain.then(() => this.resolveLocked(facilityId, code, state, keys));
    state.chain = run.catch(() => {});
    return run;
  }

  private addRows(f: FacilitySeries, rows: readonly Row[]): void {
    for (const row of rows) {
      const key = canonicalKey(row.measurement, Object.entries(row.tags), row.field);
      f.index.add(key, keyHash(key), row.id);
    }
  }

  private async resolveLocked(facilityId: number, code: string, f: FacilitySeries, keys: readonly SeriesKey[]): Promise<Resolved> {
    if (!f.loaded) {
      this.addRows(f, (await this.db.query<Row>(SELECT_ALL, [facilityId])).rows);
      f.loaded = true;
    }
    // Keys not cached, once each (found again by their bytes in a scratch index, without a string each).
    const seen = new SeriesIndex();
    const distinct: Wanted[] = [];
    const slot = new Int32Array(keys.length).fill(-1);
    const cachedId = new Int32Array(keys.length);
    keys.forEach((key, i) => {
      const bytes = canonicalKey(key.measurement, key.tags, key.field);
      const hash = keyHash(bytes);
      cachedId[i] = f.index.get(bytes, hash);
      if (cachedId[i] !== -1) return;
      let d = seen.get(bytes, hash);
      if (d === -1) {
        d = distinct.length;
        seen.add(bytes, hash, d);
        const size = seriesKeyBytes(key);
        const reason = size > this.limits.keyBytes ? `series key of ${size} bytes (${describeKey(key)}) exceeds the limit of ${this.limits.keyBytes} bytes` : null;
        distinct.push({ key, bytes, hash, reason, limited: false });
      }
      slot[i] = d;
    });
    let created = 0;
    const missing = distinct.filter((w) => w.reason === null);
    for (let i = 0; i < missing.length; i += CREATE_CHUNK) {
      const chunk = missing.slice(i, i + CREATE_CHUNK);
      // The cache holds only series that exist, and the database creates none past the limit, so a
      // cache at the limit is the facility's whole catalog: its missing keys are refused unasked.
      if (f.index.series >= this.limits.series) for (const w of chunk) this.limited(w, code);
      else created += await this.create(facilityId, code, f, chunk);
    }
    if (created > 0) this.log.debug('series created', { facilityId, created });
    const ids: (number | null)[] = [];
    const reasons: (string | null)[] = [];
    const limited: boolean[] = [];
    keys.forEach((_key, i) => {
      const w = slot[i]! >= 0 ? distinct[slot[i]!]! : null;
      const id = w ? f.index.get(w.bytes, w.hash) : cachedId[i]!;
      ids.push(id === -1 ? null : id);
      reasons.push(id === -1 ? (w?.reason ?? 'series could not be created') : null);
      limited.push(id === -1 && w?.limited === true);
    });
    return { ids, reasons, limited, created };
  }

  /** Marks a key refused for the facility's series limit. */
  private limited(w: Wanted, code: string): void {
    w.reason = `series limit of ${this.limits.series} reached for facility ${code}: new series ${describeKey(w.key)} not created`;
    w.limited = true;
  }

  /** Creates `wanted` in one statement; when the database refuses the data, bisects to the keys at fault. */
  private async create(facilityId: number, code: string, f: FacilitySeries, wanted: Wanted[]): Promise<number> {
    const args = [facilityId, this.limits.series, wanted.map((w) => w.key.measurement), wanted.map((w) => w.key.field), wanted.map((w) => JSON.stringify(Object.fromEntries(w.key.tags)))];
    try {
      const r = await this.db.query<{ n: number; id: number; created: boolean }>(CREATE, args);
      const answered = new Uint8Array(wanted.length);
      let created = 0;
      for (const row of r.rows) {
        const w = wanted[row.n - 1]!;
        f.index.add(w.bytes, w.hash, row.id);
        answered[row.n - 1] = 1;
        if (row.created) created++;
      }
      for (let i = 0; i < wanted.length; i++) if (answered[i] === 0) this.limited(wanted[i]!, code);
      return created;
    } catch (err) {
      if (classify(err) !== 'data') throw err;
      if (wanted.length === 1) {
        const w = wanted[0]!;
        w.reason = `the database refused series ${describeKey(w.key)}: ${errorText(err)}`;
        this.log.warn('series refused by the database', { facilityId, error: err });
        return 0;
      }
      const half = wanted.length >> 1;
      return (await this.create(facilityId, code, f, wanted.slice(0, half))) + (await this.create(facilityId, code, f, wanted.slice(half)));
    }
  }
}
