// Which databases get the columnstore COPY (STRATA_INGEST_MODE=columnstore) and what the others are
// told. Native PostgreSQL without TimescaleDB is real here; the TimescaleDB releases and builds this
// machine cannot run (2.20, 2.28, an Apache-only build) answer through a stand-in that returns what
// their catalogs hold. PGlite's 2.23 is covered for real in columnstore.test.ts.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDb } from '../../src/db/open.ts';
import type { Db, Queryable } from '../../src/db/port.ts';
import { decideIngestMode, IngestModeGate } from '../../src/ingest/ingest-mode.ts';
import { cluster, createDatabase, type TestDatabase } from '../support/databases.ts';
import { plainSchema } from '../support/gateway.ts';

/** What a TimescaleDB catalog answers to decideIngestMode's two queries. */
function catalog(facts: { version: string; license?: string; setting?: string | null; compression?: boolean; caggs?: number }): Queryable & { asked: number } {
  const q = {
    asked: 0,
    async query<R>(sql: string) {
      q.asked++;
      const row = sql.includes('pg_extension')
        ? { v: facts.version }
        : { license: facts.license ?? 'timescale', setting: facts.setting === undefined ? 'off' : facts.setting, compression: facts.compression ?? true, caggs: String(facts.caggs ?? 1) };
      return { rows: [row] as R[], rowCount: 1 };
    },
    async exec() {},
    async copyIn() {
      return 0;
    },
    async copyOut() {
      return 0;
    },
  };
  return q as unknown as Queryable & { asked: number };
}

describe('the ingest mode a database gets', () => {
  it('columnstore on a release that keeps direct compress with the hourly rollup (2.24 and later)', async () => {
    expect(await decideIngestMode(catalog({ version: '2.28.3' }), 'columnstore')).toEqual({ mode: 'columnstore', wanted: 'columnstore', fallback: null });
    expect((await decideIngestMode(catalog({ version: '2.24.0' }), 'columnstore')).mode).toBe('columnstore');
  });

  it('the row store, with the reason, where the release or build cannot', async () => {
    const why = async (f: Parameters<typeof catalog>[0]) => (await decideIngestMode(catalog(f), 'columnstore')).fallback;
    expect(await why({ version: '2.20.3', setting: null })).toBe('TimescaleDB 2.20.3 has no direct compress COPY (timescaledb.enable_direct_compress_copy, 2.21 and later); writing to the row store');
    expect(await why({ version: '2.23.1' })).toMatch(/^TimescaleDB 2\.23\.1 turns direct compress off on a hypertable with a continuous aggregate/);
    expect(await why({ version: '2.23.1', caggs: 0 })).toBeNull();
    expect(await why({ version: '2.28.3', license: 'apache' })).toBe('TimescaleDB 2.28.3 is an Apache-only build, which has no compression; writing to the row store');
    expect(await why({ version: '2.28.3', compression: false })).toBe('compression is not enabled on strata.metrics (run strata migrate); writing to the row store');
  });

  it('asks nothing for the row store, and asks again after a failed question', async () => {
    const q = catalog({ version: '2.28.3' });
    expect(await new IngestModeGate(q, 'rowstore').mode()).toBe('rowstore');
    expect(q.asked).toBe(0);
    let fail = true;
    const flaky = { ...q, query: (sql: string) => (fail ? Promise.reject(Object.assign(new Error('connection refused'), { code: 'ECONNREFUSED' })) : q.query(sql)) } as unknown as Queryable;
    const decided: string[] = [];
    const gate = new IngestModeGate(flaky, 'columnstore', (d) => decided.push(d.mode));
    await expect(gate.mode()).rejects.toThrow(/connection refused/);
    expect(gate.decision).toBeNull();
    fail = false;
    expect(await gate.mode()).toBe('columnstore');
    expect(await gate.mode()).toBe('columnstore');
    expect(decided).toEqual(['columnstore']);
  });

  describe('on PostgreSQL without TimescaleDB', () => {
    let t: TestDatabase;
    let db: Db;
    beforeAll(async () => {
      t = await createDatabase(cluster().adminUrl(), 'strata_mode');
      db = await openDb(t.url);
      await plainSchema(db);
    });
    afterAll(async () => {
      await db?.close();
      await t?.drop();
    });
    it('is the row store, saying TimescaleDB is not installed', async () => {
      expect(await decideIngestMode(db, 'columnstore')).toEqual({ mode: 'rowstore', wanted: 'columnstore', fallback: 'TimescaleDB is not installed in this database; writing to the row store' });
    });
  });
});
