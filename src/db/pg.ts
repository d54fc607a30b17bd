// Database port over node-postgres: a Pool, and pg-copy-streams for COPY.
import { Readable, Transform, type Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import pg from 'pg';
import { from as copyFrom, to as copyTo } from 'pg-copy-streams';
import { StrataError, errorText, sqlState } from '../errors.ts';
import type { Logger } from '../log.ts';
import { redactUrl } from '../redact.ts';
import { listenOn } from './listen.ts';
import { sendCancel } from './pg-cancel.ts';
import { pgConnection, tlsHint } from './tls.ts';
import { isCopyIn, isCopyOut, type CopySource, type Db, type QueryResult, type Queryable } from './port.ts';

const types = {
  getTypeParser(oid: number, format?: 'text' | 'binary') {
    if (oid === 20 && format !== 'binary') return (v: string) => Number(v); // int8 → number
    return pg.types.getTypeParser(oid, format);
  },
};

export interface PgOptions {
  url: string;
  max?: number;
  applicationName?: string;
  logger?: Logger;
  /**
   * Client-side deadline of each statement (COPY included). PgBouncer holds queries while its server
   * is down, so without one a caller would wait for PgBouncer's query_wait_timeout. A timed-out
   * connection is destroyed, never reused.
   */
  queryTimeoutMs?: number;
  /** Where listen() connects (a direct connection, not PgBouncer in transaction mode); the url without. */
  listenUrl?: string;
}

const ROLLBACK_TIMEOUT_MS = 5_000;
/** After a cancel, how long the statement may take to answer before its connection is cut. */
const CANCEL_GRACE_MS = 5_000;

/** Why an aborted transaction ended: the signal's reason when it is an error. */
function abortError(signal: AbortSignal): Error {
  return signal.reason instanceof Error ? signal.reason : new StrataError('tx_aborted', `the transaction was aborted: ${String(signal.reason)}`);
}

/** Closes the client's socket at once: the statement in flight fails and the session ends. */
function cut(c: pg.PoolClient): void {
  (c as unknown as { connection?: { stream?: { destroy(): void } } }).connection?.stream?.destroy();
}

/** A connection failure names the target (without its password) and keeps the driver's reason. */
function connectError(target: string, err: unknown): StrataError {
  return new StrataError('db_connect', `cannot connect to ${target}: ${tlsHint(err) ?? errorText(err)}`, { cause: err });
}

/**
 * A client on loan. `broken` is set when an error left its connection in an unknown state (a
 * failed COPY stream, a network error): such a client is destroyed, never returned to the pool.
 */
interface Loan {
  c: pg.PoolClient;
  broken: Error | null;
}

/**
 * SQLSTATEs after which a connection is not worth keeping even though the server answered: the
 * server does not accept writes (25006 read_only_sql_transaction: a primary turned read-only, or a
 * standby behind a write endpoint that has not moved yet), is shutting down (57P01-57P03), or the
 * connection itself failed (class 08). A pooled connection that met one of these would keep
 * pointing at the wrong server; destroying it makes the next loan connect afresh, through whatever
 * now answers the write endpoint.
 */
export function discardsConnection(state: string | undefined): boolean {
  return state !== undefined && (state === '25006' || state === '57P01' || state === '57P02' || state === '57P03' || state.startsWith('08'));
}

function fail(loan: Loan, err: unknown, copy: boolean): never {
  // A server error after a plain query leaves the connection usable; anything else, or any failed
  // COPY (its stream may still be running), does not. A FATAL (or PANIC) error ends the session:
  // the server closes the socket right after sending it, so the client must not go back to the
  // pool, or the next borrower gets "Connection terminated unexpectedly" instead of this message.
  // Nor may one whose error says the server is the wrong one (discardsConnection).
  const severity = (err as { severity?: unknown } | null)?.severity;
  if (copy || !sqlState(err) || severity === 'FATAL' || severity === 'PANIC' || discardsConnection(sqlState(err))) loan.broken ??= err instanceof Error ? err : new Error(String(err));
  throw err;
}

function queryable(use: <T>(fn: (loan: Loan) => Promise<T>) => Promise<T>): Queryable {
  return {
    query: <R>(sql: string, params: readonly unknown[] = []) =>
      use(async (loan) => {
        const r = await loan.c.query(sql, params as unknown[]).catch((e: unknown) => fail(loan, e, false));
        return { rows: r.rows as R[], rowCount: r.rowCount ?? 0 } satisfies QueryResult<R>;
      }),
    exec: (script) => use(async (loan) => void (await loan.c.query(script).catch((e: unknown) => fail(loan, e, false)))),
    copyIn: async (sql, source) => {
      if (!isCopyIn(sql)) throw new StrataError('copy_sql', 'copyIn needs a COPY ... FROM STDIN statement');
      return use(async (loan) => {
        const stream = loan.c.query(copyFrom(sql));
        await pipeline(toReadable(source), stream).catch((e: unknown) => fail(loan, e, !sqlState(e)));
        return stream.rowCount;
      });
    },
    copyOut: async (sql, sink) => {
      if (!isCopyOut(sql)) throw new StrataError('copy_sql', 'copyOut needs a COPY ... TO STDOUT statement');
      return use(async (loan) => {
        const stream = loan.c.query(copyTo(sql));
        let bytes = 0;
        // Counting in the pipeline (not with a second 'data' listener) keeps the sink's backpressure.
        const count = new Transform({
          transform(chunk: Buffer, _enc, cb) {
            bytes += chunk.length;
            cb(null, chunk);
          },
        });
        await pipeline(stream, count, sink as Writable).catch((e: unknown) => fail(loan, e, !sqlState(e)));
        return bytes;
      });
    },
  };
}

function toReadable(source: CopySource): Readable {
  return source instanceof Readable ? source : Readable.from(source as Iterable<Uint8Array>, { objectMode: false });
}

export function openPg(opts: PgOptions): Db {
  const target = redactUrl(opts.url);
  const pool = new pg.Pool({
    ...pgConnection(opts.url),
    max: opts.max ?? 4,
    application_name: opts.applicationName ?? 'strata',
    types,
    connectionTimeoutMillis: 10_000,
    ...(opts.queryTimeoutMs ? { query_timeout: opts.queryTimeoutMs } : {}),
    keepAlive: true,
  });
  // An idle client whose server went away must not crash the process.
  pool.on('error', (err) => opts.logger?.warn('idle database connection lost', { target, error: err }));

  // A checked-out client whose connection drops between queries emits 'error' on itself; without a
  // listener that would crash the process. The loan is marked broken and the next query fails.
  const listeners = new WeakMap<Loan, (err: Error) => void>();
  const borrow = async (): Promise<Loan> => {
    let c: pg.PoolClient;
    try {
      c = await pool.connect();
    } catch (err) {
      throw connectError(target, err);
    }
    const loan: Loan = { c, broken: null };
    const onError = (err: Error) => {
      loan.broken ??= err;
      opts.logger?.warn('database connection lost', { target, error: err });
    };
    c.on('error', onError);
    listeners.set(loan, onError);
    return loan;
  };
  const giveBack = (loan: Loan) => {
    const onError = listeners.get(loan);
    if (onError) loan.c.off('error', onError);
    loan.c.release(loan.broken ?? undefined);
  };

  const base = queryable(async (fn) => {
    const loan = await borrow();
    try {
      return await fn(loan);
    } finally {
      giveBack(loan);
    }
  });

  return {
    kind: 'postgres',
    target,
    ...base,
    async transaction(fn, opts = {}) {
      const { signal } = opts;
      if (signal?.aborted) throw abortError(signal);
      const loan = await borrow();
      let open = true;
      let settled = false;
      let graceTimer: NodeJS.Timeout | undefined;
      // An abort cancels the statement in flight, and the session is closed once the transaction has
      // settled (never pooled: a cancel that arrives late must not hit the next borrower's statement).
      // Should the server not answer the cancel in time, the socket is cut.
      const onAbort = () => {
        loan.broken ??= abortError(signal!);
        void sendCancel(loan.c).then(() => {
          if (!settled) graceTimer = setTimeout(() => cut(loan.c), CANCEL_GRACE_MS);
        });
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      const tx = queryable(async (use) => {
        if (!open) throw new StrataError('tx_closed', 'the transaction has already ended');
        if (signal?.aborted) throw abortError(signal);
        return use(loan);
      });
      try {
        if (signal?.aborted) throw abortError(signal);
        await loan.c.query('BEGIN').catch((e: unknown) => fail(loan, e, false));
        const out = await fn(tx);
        if (signal?.aborted) throw abortError(signal);
        await loan.c.query('COMMIT').catch((e: unknown) => fail(loan, e, false));
        return out;
      } catch (err) {
        if (!loan.broken) {
          let timer: NodeJS.Timeout | undefined;
          const timeout = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error('ROLLBACK timed out')), ROLLBACK_TIMEOUT_MS)));
          await Promise.race([loan.c.query('ROLLBACK'), timeout]).catch((e: unknown) => (loan.broken = e as Error));
          clearTimeout(timer);
        }
        throw err;
      } finally {
        settled = true;
        clearTimeout(graceTimer);
        signal?.removeEventListener('abort', onAbort);
        open = false;
        giveBack(loan);
      }
    },
    listen: (channel, on) => listenOn({ ...pgConnection(opts.listenUrl ?? opts.url), application_name: `${opts.applicationName ?? 'strata'} listen`, connectionTimeoutMillis: 10_000 }, channel, on),
    close: () => pool.end(),
  };
}
