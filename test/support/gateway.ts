// Gateway test helpers: the Strata schema on native PostgreSQL (no TimescaleDB there, so metrics is
// a plain table), facilities, a gateway on a free port with a private spool, and HTTP calls.
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Db } from '../../src/db/port.ts';
import { ensureRoles } from '../../src/db/roles.ts';
import { addFacility } from '../../src/facilities/registry.ts';
import { startGateway, type Gateway, type GatewayOptions } from '../../src/ingest/gateway.ts';
import { silentLogger, type Logger } from '../../src/log.ts';

const sql = (name: string) => readFileSync(join(import.meta.dirname, '../../sql', name), 'utf8');

/** The schema of sql/ with strata.metrics as a plain table (native PostgreSQL has no TimescaleDB). */
export async function plainSchema(db: Db): Promise<void> {
  await db.exec('CREATE SCHEMA IF NOT EXISTS strata');
  await ensureRoles(db);
  await db.exec(sql('0001_roles.sql'));
  await db.exec(sql('0002_catalog.sql'));
  await db.exec(`CREATE TABLE strata.metrics (time timestamptz NOT NULL, facility_id integer NOT NULL, series_id integer NOT NULL, value double precision);
    ALTER TABLE strata.metrics OWNER TO strata_maintainer; GRANT INSERT ON strata.metrics TO strata_ingest;`);
  await db.exec(sql('0004_ledger_journal_archive.sql'));
  await db.exec(sql('0005_ingest_ledger_prune.sql'));
  await db.exec(sql('0006_facility_isolation.sql'));
  await db.exec(sql('0009_series_quota.sql'));
  await db.exec(sql('0010_facility_lifecycle.sql'));
}

export async function facility(db: Db, code: string, region = 'test-1'): Promise<{ id: number; token: string }> {
  const f = await addFacility(db, { code, region });
  return { id: f.facility.id, token: f.token };
}

export function tempDir(prefix = 'strata-spool-'): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

/** The metrics token test gateways are started with (STRATA_METRICS_TOKEN), and the header that sends it. */
export const METRICS_TOKEN = 'test-metrics-token-0123456789';
export const METRICS_AUTH = { Authorization: `Bearer ${METRICS_TOKEN}` };

export async function gateway(db: Db, o: Partial<GatewayOptions> = {}, log: Logger = silentLogger): Promise<Gateway> {
  return startGateway(db, log, {
    metricsToken: METRICS_TOKEN,
    region: 'test-1',
    host: '127.0.0.1',
    port: 0,
    spoolDir: tempDir(),
    spoolMaxBytes: 256 << 20,
    maxQueueBytes: 64 << 20,
    maxBodyBytes: 32 << 20,
    batchRows: 5_000,
    batchAgeMs: 20,
    seriesLimit: 10_000,
    ledgerRetention: '7 days',
    maxAttempts: 3,
    attemptTimeoutMs: 10_000,
    replayIntervalMs: 200,
    defaultMetrics: false,
    ...o,
  });
}

export interface Reply {
  status: number;
  body: Record<string, unknown>;
  headers: Headers;
}

export async function post(base: string, path: string, body: string | Uint8Array, headers: Record<string, string> = {}): Promise<Reply> {
  const res = await fetch(base + path, { method: 'POST', body: body as BodyInit, headers });
  const text = await res.text();
  return { status: res.status, body: text ? (JSON.parse(text) as Record<string, unknown>) : {}, headers: res.headers };
}

/** Rows per series (`measurement.field tag=v,...`) as `time(µs)=value` strings, for exact comparisons. */
export async function stored(db: Db, facilityId?: number): Promise<Map<string, string[]>> {
  const r = await db.query<{ key: string; t: string; value: number }>(
    `SELECT s.measurement || '.' || s.field || ' ' || coalesce((SELECT string_agg(k || '=' || v, ',' ORDER BY k) FROM jsonb_each_text(s.tags) AS t(k, v)), '') AS key,
            (extract(epoch FROM m.time) * 1000000)::bigint::text AS t, m.value
       FROM strata.metrics m JOIN strata.series s ON s.id = m.series_id AND s.facility_id = m.facility_id
      WHERE $1::int IS NULL OR m.facility_id = $1
      ORDER BY key, m.time, m.value`,
    [facilityId ?? null],
  );
  const out = new Map<string, string[]>();
  for (const row of r.rows) {
    const list = out.get(row.key) ?? [];
    list.push(`${row.t}=${row.value}`);
    out.set(row.key, list);
  }
  return out;
}

export async function count(db: Db, where = 'true'): Promise<number> {
  const r = await db.query<{ n: number }>(`SELECT count(*)::int AS n FROM strata.metrics WHERE ${where}`);
  return r.rows[0]!.n;
}

/** Holds an exclusive lock on strata.metrics (so every COPY waits) until release() is awaited. */
export async function lockMetrics(db: Db): Promise<{ release(): Promise<void> }> {
  let release!: () => void;
  const held = new Promise<void>((r) => (release = r));
  let locked!: () => void;
  const isLocked = new Promise<void>((r) => (locked = r));
  const tx = db.transaction(async (q) => {
    await q.query('LOCK TABLE strata.metrics IN ACCESS EXCLUSIVE MODE');
    locked();
    await held;
  });
  await isLocked;
  return {
    async release() {
      release();
      await tx;
    },
  };
}
