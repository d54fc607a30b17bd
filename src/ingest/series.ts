// The series catalog cache: (facility, measurement, field key, sorted tag set) → series_id.
// A facility's series are loaded on first use and kept in memory; unknown ones are created in one
// statement per request, serialized per facility so concurrent requests never race each other.
// A per-facility limit stops a cardinality explosion at the door with a clear reason.
import type { Queryable } from '../db/port.ts';
import type { Logger } from '../log.ts';

export interface SeriesKey {
  measurement: string;
  field: string;
  /** Sorted by key. */
  tags: readonly (readonly [string, string])[];
}

export interface Resolved {
  /** Per key: the series id, or null when the key would exceed the facility's series limit. */
  ids: (number | null)[];
  /** How many keys were refused by the limit. */
  overLimit: number;
  created: number;
}

interface FacilitySeries {
  ids: Map<string, number>;
  chain: Promise<unknown>;
  loaded: boolean;
}

const byKey = (a: readonly [string, string], b: readonly [string, string]) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0);

/** The part of a series key shared by every field of one point (computed once per point). */
export function pointKey(measurement: string, tags: SeriesKey['tags']): string {
  return `${measurement}\u0000${JSON.stringify(tags)}\u0000`;
}

export function seriesKey(k: SeriesKey): string {
  return pointKey(k.measurement, k.tags) + k.field;
}

const tagsJson = (tags: SeriesKey['tags']) => JSON.stringify(Object.fromEntries(tags));

type Row = { id: number; measurement: string; field: string; tags: Record<string, string> };
const rowKey = (r: Row) => seriesKey({ measurement: r.measurement, field: r.field, tags: Object.entries(r.tags).sort(byKey) });

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

export class SeriesCatalog {
  private facilities = new Map<number, FacilitySeries>();

  constructor(
    private readonly db: Queryable,
    private readonly limit: number,
    private readonly log: Logger,
  ) {}

  /** Cached series count of a facility (after its first request). */
  count(facilityId: number): number {
    return this.facilities.get(facilityId)?.ids.size ?? 0;
  }

  /** Fast path: every key already cached → ids without touching the database. */
  cached(facilityId: number, keys: readonly string[]): number[] | null {
    const f = this.facilities.get(facilityId);
    if (!f?.loaded) return null;
    const out: number[] = [];
    for (const k of keys) {
      const id = f.ids.get(k);
      if (id === undefined) return null;
      out.push(id);
    }
    return out;
  }

  resolve(facilityId: number, keys: readonly SeriesKey[]): Promise<Resolved> {
    let f = this.facilities.get(facilityId);
    if (!f) {
      f = { ids: new Map(), chain: Promise.resolve(), loaded: false };
      this.facilities.set(facilityId, f);
    }
    const state = f;
    const run = state.chain.then(() => this.resolveLocked(facilityId, state, keys));
    state.chain = run.catch(() => {});
    return run;
  }

  private async resolveLocked(facilityId: number, f: FacilitySeries, keys: readonly SeriesKey[]): Promise<Resolved> {
    if (!f.loaded) {
      const r = await this.db.query<Row>('SELECT id, measurement, field, tags FROM strata.series WHERE facility_id = $1', [facilityId]);
      for (const row of r.rows) f.ids.set(rowKey(row), row.id);
      f.loaded = true;
    }
    const strings = keys.map(seriesKey);
    const missing = new Map<string, SeriesKey>();
    strings.forEach((s, i) => {
      if (!f.ids.has(s) && !missing.has(s)) missing.set(s, keys[i]!);
    });
    let created = 0;
    const refused = new Set<string>();
    if (missing.size > 0) {
      const room = Math.max(0, this.limit - f.ids.size);
      const wanted = [...missing].slice(0, room);
      for (const [s] of [...missing].slice(room)) refused.add(s);
      if (wanted.length > 0) {
        const args = [facilityId, wanted.map(([, k]) => k.measurement), wanted.map(([, k]) => k.field), wanted.map(([, k]) => tagsJson(k.tags))];
        const r = await this.db.query<Row & { created: boolean }>(CREATE, args);
        for (const row of r.rows) f.ids.set(rowKey(row), row.id);
        created = r.rows.filter((row) => row.created).length;
        const lost = wanted.filter(([s]) => !f.ids.has(s));
        if (lost.length > 0) {
          // Created by another gateway after this statement's snapshot: visible to a new statement.
          const again = await this.db.query<Row>('SELECT id, measurement, field, tags FROM strata.series WHERE facility_id = $1', [facilityId]);
          for (const row of again.rows) f.ids.set(rowKey(row), row.id);
        }
        if (created > 0) this.log.debug('series created', { facilityId, created });
      }
    }
    return { ids: strings.map((s) => (refused.has(s) ? null : (f.ids.get(s) ?? null))), overLimit: refused.size, created };
  }
}
