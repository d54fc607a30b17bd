// One classifier maps a database error to what the writer does with the batch (DESIGN §8.2).
//   retry  transient: the same batch may succeed later (connection lost, server restarting,
//          read-only after a failover, serialization failure, deadlock) — back off and retry,
//          then spool.
//   data   the rows themselves are refused (classes 22 data exception, 23 integrity violation,
//          54 program limit such as an index row too large): only the offending rows are rejected.
//   fatal  anything else (missing table, permission denied, syntax): retrying cannot help and the
//          rows are not at fault, so the request fails with 500 and the collector keeps its data.
//          Unknown SQLSTATEs are fatal rather than retried so a misconfiguration surfaces at once
//          instead of filling the spool.
// probeWritable() asks whether the database is one that accepts writes: a server that answers but is
// read-only (a standby still in recovery, or a primary set read-only) is down for the writer.
import type { Queryable } from '../db/port.ts';
import { StrataError, sqlState } from '../errors.ts';

export type ErrorClass = 'retry' | 'data' | 'fatal';

const RETRY_STATES = new Set(['57P01', '57P02', '57P03', '25006', '40001', '40P01', '53300', '55P03']);
const NETWORK_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN']);
const NETWORK_TEXT = /connection terminated|connection (was )?closed|server closed the connection|timeout exceeded|query read timeout|not queryable|client has encountered a connection error/i;

export function classify(err: unknown): ErrorClass {
  const state = sqlState(err);
  if (state) {
    if (state.startsWith('08') || RETRY_STATES.has(state)) return 'retry';
    if (state.startsWith('22') || state.startsWith('23') || state.startsWith('54')) return 'data';
    return 'fatal';
  }
  if (err instanceof StrataError && err.code === 'db_connect') return 'retry';
  const e = err as { code?: unknown; message?: unknown } | null;
  if (typeof e?.code === 'string' && NETWORK_CODES.has(e.code)) return 'retry';
  if (typeof e?.message === 'string' && NETWORK_TEXT.test(e.message)) return 'retry';
  return 'fatal';
}

/** Exponential backoff with full jitter: a random delay in [0, min(cap, base·2^attempt)). */
export function backoffMs(attempt: number, baseMs = 50, capMs = 2_000, random: () => number = Math.random): number {
  return Math.floor(random() * Math.min(capMs, baseMs * 2 ** attempt));
}

/** SQLSTATE 25006 read_only_sql_transaction: the server answered but does not accept writes. */
export function isReadOnlyError(err: unknown): boolean {
  return sqlState(err) === '25006';
}

/** Why the writer takes the database for down; fixed texts (no host names), so a change of state is a change of text. */
export const DOWN = {
  unreachable: 'the database is unreachable',
  inRecovery: 'the database does not accept writes: it is in recovery (a standby; the write endpoint has not moved to a primary yet)',
  readOnly: 'the database does not accept writes: it is read-only (transaction_read_only is on)',
} as const;

export type Writability = { writable: true } | { writable: false; reason: string; error?: unknown };

/**
 * One statement, so that through PgBouncer transaction pooling both answers come from the same server
 * connection. transaction_read_only is on inside a standby and where default_transaction_read_only is on.
 */
export const WRITABLE_PROBE = `SELECT pg_is_in_recovery() AS in_recovery, current_setting('transaction_read_only') AS read_only`;

/** Whether the database accepts writes; never throws (an error means unreachable, with the error attached). */
export async function probeWritable(db: Queryable): Promise<Writability> {
  let row: { in_recovery: boolean; read_only: string } | undefined;
  try {
    row = (await db.query<{ in_recovery: boolean; read_only: string }>(WRITABLE_PROBE)).rows[0];
  } catch (err) {
    return { writable: false, reason: DOWN.unreachable, error: err };
  }
  if (row?.in_recovery === true) return { writable: false, reason: DOWN.inRecovery };
  if (row?.read_only !== 'off') return { writable: false, reason: DOWN.readOnly };
  return { writable: true };
}
