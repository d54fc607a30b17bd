// What an operator wants to know about a Strata database: `strata status` and `strata dev`.
import type { Db } from './db/port.ts';

export interface Status {
  target: string;
  timescaledb: string | null;
  license: string | null;
  migrations: string[];
  hypertable: { chunkInterval: string; chunks: number; compressedChunks: number; segmentBy: string[]; orderBy: string[] } | null;
  tablespaces: string[];
  facilities: number;
  series: number;
}

export async function readStatus(db: Db): Promise<Status> {
  const ext = (
    await db.query<{ v: string | null; license: string | null }>(
      `SELECT (SELECT extversion FROM pg_extension WHERE extname = 'timescaledb') AS v,
              current_setting('timescaledb.license', true) AS license`,
    )
  ).rows[0]!;
  const hasSchema = (await db.query(`SELECT 1 FROM pg_tables WHERE schemaname = 'strata' AND tablename = 'schema_migrations'`)).rows.length > 0;
  const status: Status = { target: db.target, timescaledb: ext.v, license: ext.license, migrations: [], hypertable: null, tablespaces: [], facilities: 0, series: 0 };
  status.tablespaces = (await db.query<{ n: string }>(`SELECT spcname AS n FROM pg_tablespace WHERE spcname NOT LIKE 'pg\\_%' ORDER BY 1`)).rows.map((r) => r.n);
  if (!hasSchema || !ext.v) return status;
  status.migrations = (await db.query<{ name: string }>('SELECT name FROM strata.schema_migrations ORDER BY version')).rows.map((r) => r.name);
  const dim = (
    await db.query<{ i: string }>(
      `SELECT time_interval::text AS i FROM timescaledb_information.dimensions WHERE hypertable_schema = 'strata' AND hypertable_name = 'metrics'`,
    )
  ).rows[0];
  if (dim) {
    const chunks = (
      await db.query<{ n: number; c: number }>(
        `SELECT count(*)::int AS n, count(*) FILTER (WHERE is_compressed)::int AS c FROM timescaledb_information.chunks
          WHERE hypertable_schema = 'strata' AND hypertable_name = 'metrics'`,
      )
    ).rows[0]!;
    const settings = await db.query<{ attname: string; segmentby_column_index: number | null; orderby_column_index: number | null; orderby_asc: boolean | null }>(
      `SELECT attname, segmentby_column_index, orderby_column_index, orderby_asc FROM timescaledb_information.compression_settings
        WHERE hypertable_schema = 'strata' AND hypertable_name = 'metrics'`,
    );
    const seg = settings.rows.filter((r) => r.segmentby_column_index !== null).sort((a, b) => a.segmentby_column_index! - b.segmentby_column_index!);
    const ord = settings.rows.filter((r) => r.orderby_column_index !== null).sort((a, b) => a.orderby_column_index! - b.orderby_column_index!);
    status.hypertable = {
      chunkInterval: dim.i,
      chunks: chunks.n,
      compressedChunks: chunks.c,
      segmentBy: seg.map((r) => r.attname),
      orderBy: ord.map((r) => `${r.attname}${r.orderby_asc === false ? ' DESC' : ''}`),
    };
  }
  const counts = (await db.query<{ f: number; s: number }>('SELECT (SELECT count(*) FROM strata.facilities)::int AS f, (SELECT count(*) FROM strata.series)::int AS s')).rows[0]!;
  status.facilities = counts.f;
  status.series = counts.s;
  return status;
}

export function formatStatus(s: Status): string {
  const lines = [
    `database:     ${s.target}`,
    `timescaledb:  ${s.timescaledb ?? 'not installed'}${s.license ? ` (license: ${s.license})` : ''}`,
    `migrations:   ${s.migrations.length ? `${s.migrations.length} applied, latest ${s.migrations.at(-1)}` : 'none applied (run strata migrate)'}`,
  ];
  if (s.hypertable) {
    const h = s.hypertable;
    lines.push(
      `hypertable:   strata.metrics, chunk interval ${h.chunkInterval}, ${h.chunks} chunks (${h.compressedChunks} compressed)`,
      `compression:  ${h.segmentBy.length ? `segmentby ${h.segmentBy.join(', ')}; orderby ${h.orderBy.join(', ')}` : 'not enabled'}`,
    );
  }
  lines.push(`tablespaces:  ${s.tablespaces.join(', ') || '(default only)'}`, `facilities:   ${s.facilities}, series: ${s.series}`);
  return lines.join('\n');
}
