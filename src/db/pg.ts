// Database port over node-postgres: a Pool, and pg-copy-streams for COPY.
import { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { Readable } from 'node:stream';
import pg from 'pg';
import { from as copyFrom, to as copyTo } from 'pg-copy-streams';
import { StrataError, errorText, sqlState } from '../errors.ts';
import type { Logger } from '../log.ts';
import { redactUrl } from '../redact.ts';
import { COPY_FROM_STDIN, COPY_TO_STDOUT, type CopySource, type Db, type QueryResult, type Queryable } from './port.ts';

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
}

/** A connection failure names the target (without its password) and keeps the driver's reason. */
function connectError(target: string, err: unknown): StrataError {
  return new StrataError('db_connect', `cannot connect to ${target}: ${errorText(err)}`, { cause: err });
}

type Client = pg.PoolClient;

function queryable(client: () => Promise<{ c: Client; release: (err?: Error) => void }>): Queryable {
  const withClient = async <T>(fn: (c: Client) => Promise<T>): Promise<T> => {
    const { c, release } = await client();
    try {
      const out = await fn(c);
      release();
      return out;
    } catch (err) {
      // A client whose connection broke is discarded, not returned to the pool.
      release(sqlState(err) ? undefined : (err as Error));
      throw err;
    }
  };
  return {
    query: <R>(sql: string, params: readonly unknown[] = []) =>
      withClient(async (c) => {
        const r = await c.query(sql, params as unknown[]);
        return { rows: r.rows as R[], rowCount: r.rowCount ?? 0 } satisfies QueryResult<R>;
      }),
    exec: (script) => withClient(async (c) => void (await c.query(script))),
    copyIn: async (sql, source) => {
      if (!COPY_FROM_STDIN.test(sql)) throw new StrataError('copy_sql', 'copyIn needs a COPY ... FROM STDIN statement');
      return withClient(async (c) => {
        const stream = c.query(copyFrom(sql));
        await pipeline(toReadable(source), stream);
        return stream.rowCount;
      });
    },
    copyOut: async (sql, sink) => {
      if (!COPY_TO_STDOUT.test(sql)) throw new StrataError('copy_sql', 'copyOut needs a COPY ... TO STDOUT statement');
      return withClient(async (c) => {
        const stream = c.query(copyTo(sql));
        let bytes = 0;
        stream.on('data', (chunk: Buffer) => (bytes += chunk.length));
        await pipeline(stream, sink as Writable, { end: true });
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
    connectionString: opts.url,
    max: opts.max ?? 4,
    application_name: opts.applicationName ?? 'strata',
    types,
    connectionTimeoutMillis: 10_000,
  });
  // An idle client whose server went away must not crash the process.
  pool.on('error', (err) => opts.logger?.warn('idle database connection lost', { target, error: err }));

  const acquire = async () => {
    let c: Client;
    try {
      c = await pool.connect();
    } catch (err) {
      throw connectError(target, err);
    }
    return { c, release: (err?: Error) => c.release(err) };
  };
  const base = queryable(acquire);

  return {
    kind: 'postgres',
    target,
    ...base,
    async transaction(fn) {
      const { c, release } = await acquire();
      const tx = queryable(async () => ({ c, release: () => {} }));
      try {
        await c.query('BEGIN');
        const out = await fn(tx);
        await c.query('COMMIT');
        release();
        return out;
      } catch (err) {
        try {
          await c.query('ROLLBACK');
          release();
        } catch {
          release(err as Error);
        }
        throw err;
      }
    },
    close: () => pool.end(),
  };
}
