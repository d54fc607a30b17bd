// The database port: the only way code above src/db/ talks to PostgreSQL/TimescaleDB.
//
// Glossary
//   Queryable  something that runs SQL: the pool itself or one open transaction.
//   copyIn     `COPY ... FROM STDIN` fed from a stream of buffers; resolves with the rows copied,
//              only after the server confirmed the COPY (CopyDone answered by CommandComplete).
//   copyOut    `COPY ... TO STDOUT` written into a Writable; resolves with the bytes written.
//
// Two implementations: pg.ts (node-postgres Pool + pg-copy-streams, for real deployments) and
// pglite.ts (embedded PGlite with TimescaleDB, for `strata dev` and tests). Both return int8 as
// number, numeric as string, timestamptz as Date and json/jsonb parsed.
import type { Writable } from 'node:stream';

export type Row = Record<string, unknown>;

export interface QueryResult<R = Row> {
  rows: R[];
  rowCount: number;
}

export type CopySource = AsyncIterable<Uint8Array> | Iterable<Uint8Array>;

export interface Queryable {
  /** One statement, with $1.. parameters. */
  query<R = Row>(sql: string, params?: readonly unknown[]): Promise<QueryResult<R>>;
  /** A script of several statements, no parameters. */
  exec(script: string): Promise<void>;
  /** `COPY <table> FROM STDIN ...`; resolves with the number of rows the server copied. */
  copyIn(sql: string, source: CopySource): Promise<number>;
  /** `COPY <table or (query)> TO STDOUT ...`; resolves with the number of bytes written to the sink. */
  copyOut(sql: string, sink: Writable): Promise<number>;
}

export interface TransactionOptions {
  signal?: AbortSignal;
}

export interface Db extends Queryable {
  readonly kind: 'postgres' | 'pglite';
  /** Where it points, without credentials. */
  readonly target: string;
  /**
   * Runs fn inside BEGIN/COMMIT; rolls back and rethrows if fn throws. When `signal` aborts, the
   * statement in flight is cancelled on the server (pg.ts: a CancelRequest, then the connection is
   * closed and never reused) and the returned promise settles only once the server let go of the
   * transaction, so the caller can hand its slot on without leaving work running behind it.
   * PGlite cannot interrupt a statement: there the transaction runs to its end.
   */
  transaction<T>(fn: (tx: Queryable) => Promise<T>, opts?: TransactionOptions): Promise<T>;
  /**
   * LISTEN on a channel: `notify` for each notification; `lost` once when the subscription ends
   * without close() (connection lost: notifications meanwhile are missed, subscribe again). pg.ts
   * listens on a connection of its own, never a pooled one.
   */
  listen(channel: string, on: { notify(payload: string): void; lost(err: Error): void }): Promise<Notifications>;
  close(): Promise<void>;
}

export interface Notifications {
  close(): Promise<void>;
}

/**
 * `COPY ... FROM STDIN` / `TO STDOUT` statements are the only COPY forms the port accepts. The clause
 * must end the statement (options in parentheses may follow), so text inside a query or a string
 * literal never matches. Group 1 is the trailing options.
 */
export const COPY_FROM_STDIN = /\bfrom\s+stdin\b(\s*(?:with\s*)?\([^()']*\))?\s*;?\s*$/i;
export const COPY_TO_STDOUT = /\bto\s+stdout\b(\s*(?:with\s*)?\([^()']*\))?\s*;?\s*$/i;

export const isCopyIn = (sql: string): boolean => /^\s*copy\s/i.test(sql) && COPY_FROM_STDIN.test(sql);
export const isCopyOut = (sql: string): boolean => /^\s*copy\s/i.test(sql) && COPY_TO_STDOUT.test(sql);
