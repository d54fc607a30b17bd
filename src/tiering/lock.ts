// One session advisory lock per hypertable, shared by the tiering and archive jobs (they work on the
// same chunks). A session lock lives on one connection, so the jobs run on a direct connection of
// their own (a pool of one), never through PgBouncer's transaction pooling.
import type { Queryable } from '../db/port.ts';

const KEY = `hashtext('strata.chunk-jobs'), hashtext($1)`;

/** Takes the lock if it is free (or already held by this session); false when another session holds it. */
export async function tryLock(db: Queryable, hypertable: string): Promise<boolean> {
  const r = await db.query<{ ok: boolean }>(`SELECT pg_try_advisory_lock(${KEY}) AS ok`, [hypertable]);
  return r.rows[0]!.ok;
}

/** Releases every hold of this session on the lock (tryLock nests). */
export async function unlock(db: Queryable, hypertable: string): Promise<void> {
  for (let i = 0; i < 10_000; i++) {
    const r = await db.query<{ ok: boolean }>(`SELECT pg_advisory_unlock(${KEY}) AS ok`, [hypertable]);
    if (!r.rows[0]!.ok) return;
  }
}
