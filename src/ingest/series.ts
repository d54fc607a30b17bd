// The series catalog cache: (facility, measurement, field key, tag set) → series_id.
// A facility's series are loaded on first use into a SeriesIndex (canonical key bytes, series-key.ts)
// that the fast path reads directly; unknown ones are created in one statement per request,
// serialized per facility so concurrent requests never race each other.
// A key is refused per line, never per request: over the facility's series limit, longer than the
// key limit, or refused by the database for its data (SQLSTATE class 22, 23 or 54; found by bisecting
// the statement's keys, so the other keys of the request are still created).
import type { Queryable } from '../db/port.ts';
import { errorText, sqlState } from '../errors.ts';
import type { Logger } from '../log.ts';
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
}

type Row = { id: number; measurement: string; field: string; tags: Record<string, string> };

const CREATE = `
WITH input AS (SELECT m, f, t::jsonb AS t FROM unnest($2::text[], $3::text[], $4::text[]) AS u(m, f, t)),
ins AS (
  INSERT INTO strata.series (facility_id, measurement, field, tags)
  SELECT $1, m, f, t FROM input
  ON CONFLICT (facility_id, measurement, field, tags) DO NOTHING
  RETURNING id, measurement, field, tags)
SELECT id, measurement, field, tags, true AS created FROM ins
UNION ALL
SELECT s.id, s.measurement, s.field, s.tags, false FROM strata.series s JOIN input i
  ON s.facility_id = $1 AND s.measurement = i.m AND s.field = i.f AND s.tags = i.t`;

const SELECT_ALL = 'SELECT id, measurement, field, tags FROM strata.series WHERE facility_id = $1';

/** Error classes caused by the data itself: data exception, integrity violation, program limit (index row size). */
const isDataError = (err: unknown) => /^(22|23|54)/.test(sqlState(err) ?? '');

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
    const all = keys.map((key): Wanted => {
      const bytes = canonicalKey(key.measurement, key.tags, key.field);
      return { key, bytes, hash: keyHash(bytes) };
    });
    const refused = new Map<string, string>();
    const missing = new Map<string, Wanted>();
    for (const w of all) {
      const s = w.bytes.toString('latin1');
      if (f.index.get(w.bytes, w.hash) !== -1 || missing.has(s) || refused.has(s)) continue;
      const size = seriesKeyBytes(w.key);
      if (size > this.limits.keyBytes) refused.set(s, `series key of ${size} bytes (${describeKey(w.key)}) exceeds the limit of ${this.limits.keyBytes} bytes`);
      else missing.set(s, w);
    }
    let created = 0;
    const overLimit = new Set<string>();
    if (missing.size > 0) {
      const room = Math.max(0, this.limits.series - f.index.series);
      const list = [...missing];
      for (const [s, w] of list.slice(room)) {
        refused.set(s, `series limit of ${this.limits.series} reached for facility ${code}: new series ${describeKey(w.key)} not created`);
        overLimit.add(s);
      }
      const wanted = list.slice(0, room).map(([, w]) => w);
      if (wanted.length > 0) {
        created = await this.create(facilityId, f, wanted, refused);
        if (wanted.some((w) => f.index.get(w.bytes, w.hash) === -1 && !refused.has(w.bytes.toString('latin1')))) {
          // Created by another gateway after this statement's snapshot: visible to a new statement.
          this.addRows(f, (await this.db.query<Row>(SELECT_ALL, [facilityId])).rows);
        }
        if (created > 0) this.log.debug('series created', { facilityId, created });
      }
    }
    const ids: (number | null)[] = [];
    const reasons: (string | null)[] = [];
    const limited: boolean[] = [];
    for (const w of all) {
      const id = f.index.get(w.bytes, w.hash);
      const s = id === -1 ? w.bytes.toString('latin1') : '';
      ids.push(id === -1 ? null : id);
      reasons.push(id === -1 ? (refused.get(s) ?? 'series could not be created') : null);
      limited.push(id === -1 && overLimit.has(s));
    }
    return { ids, reasons, limited, created };
  }

  /** Creates `wanted` in one statement; when the database refuses the data, bisects to the keys at fault. */
  private async create(facilityId: number, f: FacilitySeries, wanted: Wanted[], refused: Map<string, string>): Promise<number> {
    const args = [facilityId, wanted.map((w) => w.key.measurement), wanted.map((w) => w.key.field), wanted.map((w) => JSON.stringify(Object.fromEntries(w.key.tags)))];
    try {
      const r = await this.db.query<Row & { created: boolean }>(CREATE, args);
      this.addRows(f, r.rows);
      return r.rows.filter((row) => row.created).length;
    } catch (err) {
      if (!isDataError(err)) throw err;
      if (wanted.length === 1) {
        const w = wanted[0]!;
        refused.set(w.bytes.toString('latin1'), `the database refused series ${describeKey(w.key)}: ${errorText(err)}`);
        this.log.warn('series refused by the database', { facilityId, error: err });
        return 0;
      }
      const half = wanted.length >> 1;
      return (await this.create(facilityId, f, wanted.slice(0, half), refused)) + (await this.create(facilityId, f, wanted.slice(half), refused));
    }
  }
}
