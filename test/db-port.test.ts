// Both port implementations behave alike: queries, transactions, COPY in and COPY out.
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDb } from '../src/db/open.ts';
import type { Db } from '../src/db/port.ts';
import { StrataError } from '../src/errors.ts';
import { cluster, createDatabase, type TestDatabase } from './support/databases.ts';
import { freePort } from './support/cluster.ts';

class Collector extends Writable {
  chunks: Buffer[] = [];
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: () => void): void {
    this.chunks.push(chunk);
    cb();
  }
  get bytes(): Buffer {
    return Buffer.concat(this.chunks);
  }
}

/** COPY text in the exact form the server prints it back (UTC timestamps, shortest floats). */
const CANONICAL = [
  '1\tplain\t2026-11-21 10:00:00+00\t71.5',
  '2\ttab\\there\t2026-11-21 10:00:00.123456+00\t-0.1',
  '3\tnew\\nline and back\\\\slash\t1970-01-01 00:00:00+00\t1e-300',
  '4\tüñïçødé ✓\t2026-02-28 23:59:59.999999+00\t\\N',
  '5\t\\N\t2038-01-19 03:14:08+00\t1.7976931348623157e+308',
]
  .map((l) => l + '\n')
  .join('');

/** Splits a buffer at awkward places so COPY data arrives in many small pieces. */
function* pieces(buf: Buffer, size: number): Generator<Uint8Array> {
  for (let i = 0; i < buf.length; i += size) yield buf.subarray(i, i + size);
}

const TABLE = 'CREATE TABLE port_t (id int PRIMARY KEY, name text, at timestamptz, v float8)';

interface Port {
  name: string;
  open(): Promise<Db>;
  done?(): Promise<void>;
}

let nativeDb: TestDatabase;
beforeAll(async () => {
  nativeDb = await createDatabase(cluster().adminUrl(), 'strata_port');
  const admin = await openDb(nativeDb.url);
  await admin.exec(`ALTER DATABASE ${nativeDb.name} SET timezone = 'UTC'`);
  await admin.close();
});
afterAll(async () => nativeDb?.drop());

const bouncerUrl = () => nativeDb.url.replace(`:${cluster().pgPort}/`, `:${cluster().bouncerPort}/`);
const ports: Port[] = [
  { name: 'pglite', open: () => openDb('pglite:memory') },
  { name: 'pg direct', open: () => openDb(nativeDb.url) },
  { name: 'pg through PgBouncer (transaction pooling)', open: () => openDb(bouncerUrl()) },
];
const urlOf = (port: Port) => (port.name === 'pg direct' ? nativeDb.url : bouncerUrl());

describe.each(ports)('database port: $name', (port) => {
  let db: Db;
  beforeAll(async () => {
    db = await port.open();
    await db.exec('DROP TABLE IF EXISTS port_t; DROP TABLE IF EXISTS port_copy;');
    await db.exec(TABLE);
  });
  afterAll(async () => {
    await db.exec('DROP TABLE IF EXISTS port_t; DROP TABLE IF EXISTS port_copy;');
    await db.close();
  });

  it('runs parameterised queries with the same value types', async () => {
    const r = await db.query<{ n: number; big: number; num: string; at: Date; j: unknown; t: string | null }>(
      `SELECT $1::int + 1 AS n, 9007199254740991::int8 AS big, 1.50::numeric AS num,
              '2026-11-21T10:00:00Z'::timestamptz AS at, '{"a":[1]}'::jsonb AS j, $2::text AS t`,
      [41, null],
    );
    expect(r.rows).toEqual([{ n: 42, big: 9007199254740991, num: '1.50', at: new Date('2026-11-21T10:00:00Z'), j: { a: [1] }, t: null }]);
  });

  it('commits a transaction and rolls one back when its function throws', async () => {
    await db.query('DELETE FROM port_t');
    await db.transaction(async (tx) => {
      await tx.query('INSERT INTO port_t (id, name) VALUES (1, $1)', ['kept']);
    });
    await expect(
      db.transaction(async (tx) => {
        await tx.query('INSERT INTO port_t (id, name) VALUES (2, $1)', ['lost']);
        throw new Error('abort this one');
      }),
    ).rejects.toThrow('abort this one');
    const r = await db.query<{ id: number }>('SELECT id FROM port_t ORDER BY id');
    expect(r.rows).toEqual([{ id: 1 }]);
  });

  it('copies text in from many small buffers and out again byte for byte', async () => {
    await db.query('DELETE FROM port_t');
    const n = await db.copyIn('COPY port_t (id, name, at, v) FROM STDIN', pieces(Buffer.from(CANONICAL), 7));
    expect(n).toBe(5);
    const sink = new Collector();
    const bytes = await db.copyOut('COPY (SELECT id, name, at, v FROM port_t ORDER BY id) TO STDOUT', sink);
    expect(sink.bytes.toString('utf8')).toBe(CANONICAL);
    expect(bytes).toBe(Buffer.byteLength(CANONICAL));
    const row = await db.query<{ name: string; v: number | null }>('SELECT name, v FROM port_t WHERE id = 3');
    expect(row.rows[0]).toEqual({ name: 'new\nline and back\\slash', v: 1e-300 });
  });

  it('round-trips binary COPY byte for byte', async () => {
    await db.query('DELETE FROM port_t');
    await db.copyIn('COPY port_t FROM STDIN', [Buffer.from(CANONICAL)]);
    const first = new Collector();
    await db.copyOut('COPY (SELECT * FROM port_t ORDER BY id) TO STDOUT (FORMAT binary)', first);
    await db.exec('CREATE TABLE port_copy (LIKE port_t)');
    const n = await db.copyIn('COPY port_copy FROM STDIN (FORMAT binary)', pieces(first.bytes, 13));
    expect(n).toBe(5);
    const second = new Collector();
    await db.copyOut('COPY (SELECT * FROM port_copy ORDER BY id) TO STDOUT (FORMAT binary)', second);
    expect(second.bytes.equals(first.bytes)).toBe(true);
    expect(first.bytes.subarray(0, 11).toString('latin1')).toBe('PGCOPY\n\xff\r\n\0');
  });

  it('copies inside a transaction, and a rollback undoes the COPY', async () => {
    await db.query('DELETE FROM port_t');
    await expect(
      db.transaction(async (tx) => {
        await tx.copyIn('COPY port_t FROM STDIN', [Buffer.from('10\ta\t\\N\t1\n')]);
        const inside = await tx.query<{ n: number }>('SELECT count(*)::int AS n FROM port_t');
        expect(inside.rows[0]!.n).toBe(1);
        throw new Error('rollback');
      }),
    ).rejects.toThrow('rollback');
    expect((await db.query<{ n: number }>('SELECT count(*)::int AS n FROM port_t')).rows[0]!.n).toBe(0);
  });

  it('rejects bad COPY data with its SQLSTATE, writes nothing, and stays usable', async () => {
    await db.query('DELETE FROM port_t');
    const err = await db.copyIn('COPY port_t FROM STDIN', [Buffer.from('1\tok\t\\N\t1\nnot-a-number\tbad\t\\N\t2\n')]).catch((e: unknown) => e);
    expect((err as { code?: string }).code).toBe('22P02');
    expect((err as Error).message).toMatch(/invalid input syntax for type integer/);
    expect((await db.query<{ n: number }>('SELECT count(*)::int AS n FROM port_t')).rows[0]!.n).toBe(0);
    await db.copyIn('COPY port_t FROM STDIN', [Buffer.from('7\tafter\t\\N\t1\n')]);
    expect((await db.query<{ n: number }>('SELECT count(*)::int AS n FROM port_t')).rows[0]!.n).toBe(1);
  });

  it('aborts the COPY when its source fails midway, leaving no rows', async () => {
    await db.query('DELETE FROM port_t');
    async function* failing(): AsyncGenerator<Uint8Array> {
      yield Buffer.from('1\ta\t\\N\t1\n');
      throw new Error('collector went away');
    }
    await expect(db.copyIn('COPY port_t FROM STDIN', failing())).rejects.toThrow('collector went away');
    expect((await db.query<{ n: number }>('SELECT count(*)::int AS n FROM port_t')).rows[0]!.n).toBe(0);
  });

  it('stays usable, on one connection, after a sink fails during COPY out, in or out of a transaction', async () => {
    const one = port.name === 'pglite' ? db : await openDb(urlOf(port), { max: 1 });
    const failing = () =>
      new Writable({
        write(_chunk, _enc, cb) {
          cb(new Error('disk full'));
        },
      });
    try {
      await expect(one.copyOut('COPY (SELECT g FROM generate_series(1, 200000) g) TO STDOUT', failing())).rejects.toThrow('disk full');
      expect((await one.query<{ n: number }>('SELECT 1 AS n')).rows).toEqual([{ n: 1 }]);
      await expect(
        one.transaction(async (tx) => {
          await tx.query("SELECT set_config('application_name', 'in-tx', true)");
          await tx.copyOut('COPY (SELECT g FROM generate_series(1, 200000) g) TO STDOUT', failing());
        }),
      ).rejects.toThrow('disk full');
      expect((await one.query<{ n: number }>('SELECT 2 AS n')).rows).toEqual([{ n: 2 }]);
    } finally {
      if (one !== db) await one.close();
    }
  });

  it('counts the rows a SELECT returns and refuses a transaction used after it ended', async () => {
    expect((await db.query('SELECT g FROM generate_series(1, 3) g')).rowCount).toBe(3);
    let leaked: Parameters<Parameters<Db['transaction']>[0]>[0] | undefined;
    await db.transaction(async (tx) => {
      leaked = tx;
    });
    await expect(leaked!.query('SELECT 1')).rejects.toThrow(/closed|ended/);
  });

  it('matches COPY ... TO STDOUT only as the final clause, never inside a literal', async () => {
    const sink = new Collector();
    await db.copyOut(`COPY (SELECT 'to stdout' AS a, 'from stdin' AS b) TO STDOUT (FORMAT csv)`, sink);
    expect(sink.bytes.toString()).toBe('to stdout,from stdin\n');
    await expect(db.copyIn(`COPY (SELECT 'from stdin') TO STDOUT`, [])).rejects.toThrow(/COPY \.\.\. FROM STDIN/);
  });

  it('refuses COPY statements that do not read STDIN or write STDOUT', async () => {
    await expect(db.copyIn("COPY port_t FROM '/etc/passwd'", [])).rejects.toThrow(/COPY \.\.\. FROM STDIN/);
    await expect(db.copyOut("COPY port_t TO '/tmp/x'", new Collector())).rejects.toThrow(/COPY \.\.\. TO STDOUT/);
  });
});

describe('node-postgres port connection failures', () => {
  it('names the target without its password', async () => {
    const port = await freePort();
    const db = await openDb(`postgres://strata:very-secret-pw@127.0.0.1:${port}/nothing`);
    const err = (await db.query('SELECT 1').catch((e: unknown) => e)) as StrataError;
    await db.close();
    expect(err).toBeInstanceOf(StrataError);
    expect(err.message).toContain(`cannot connect to postgres://strata:***@127.0.0.1:${port}/nothing`);
    expect(err.message).toMatch(/ECONNREFUSED/);
    expect(err.message).not.toContain('very-secret-pw');
  });
});

describe('node-postgres port, connection lost while a client is checked out', () => {
  it('fails the next statement of the transaction instead of crashing the process, and the pool recovers', async () => {
    const t = await createDatabase(cluster().adminUrl(), 'strata_lost');
    const db = await openDb(t.url, { max: 1 });
    const admin = await openDb(t.url, { max: 1 });
    try {
      const err = await db
        .transaction(async (tx) => {
          const pid = (await tx.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid;
          await admin.query('SELECT pg_terminate_backend($1)', [pid]);
          await new Promise((r) => setTimeout(r, 200)); // the client sees the connection end while idle in the transaction
          await tx.query('SELECT 1');
        })
        .catch((e: unknown) => e);
      expect(String(err)).toMatch(/terminat|not queryable|connection/i);
      expect((await db.query<{ one: number }>('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
    } finally {
      await db.close();
      await admin.close();
      await t.drop();
    }
  });
});

describe('node-postgres port, a FATAL error from the server', () => {
  it('keeps the server’s message and never lends the dead connection out again', async () => {
    const t = await createDatabase(cluster().adminUrl(), 'strata_fatal');
    const db = await openDb(t.url, { max: 1 });
    try {
      // The server sends its FATAL message, then closes the socket: the query gets the message, and the
      // next borrower (at once, before the socket's end is seen) must get a new connection.
      const err = (await db.query('SELECT pg_terminate_backend(pg_backend_pid())').catch((e: unknown) => e)) as Error & { severity?: string };
      expect(err.message).toBe('terminating connection due to administrator command');
      expect(err.severity).toBe('FATAL');
      expect((await db.query<{ one: number }>('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
    } finally {
      await db.close();
      await t.drop();
    }
  });
});
