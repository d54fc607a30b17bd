// The chunk-job lock: one session advisory lock per hypertable, shared by the tiering and archive
// jobs (they work on the same chunks). A session lock lives exactly as long as its session, so:
//   - It is held on a session the run can watch. On a server, a dedicated connection of its own
//     (never a pooled one: a pool would quietly replace a dead connection, and a lock re-taken on the
//     new one, perhaps on a new primary after a failover, is not the lock the run started with).
//   - Losing that session (connection error or end, backend terminated, failover, the server turned
//     standby) is losing the lock: the JobLock's signal aborts with a LockLost at once, and verify()
//     (before every step, and every few seconds meanwhile) finds it too. A lost lock is never taken
//     again under the same run: the run stops, journals why, and the next run converges.
//   - On an embedded database (PGlite: one in-process session) the lock is taken on that session.
// Imports only db/ and the ground floor (and the pg driver, for the dedicated connection).
import pg from 'pg';
import type { Queryable } from '../db/port.ts';
import { pgConnection } from '../db/tls.ts';
import { errorText } from '../errors.ts';

const KEY = `hashtext('strata.chunk-jobs'), hashtext($1)`;
/** This session holds the lock (pg_locks shows a two-key advisory lock as classid/objid, objsubid 2; PGlite's one session has pid 0 and no pid in pg_locks). */
const HELD = `SELECT pg_backend_pid() AS pid, pg_is_in_recovery() AS standby,
  EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND coalesce(pid, 0) = pg_backend_pid() AND granted AND objsubid = 2
            AND classid::bigint = (hashtext('strata.chunk-jobs')::bigint & 4294967295) AND objid::bigint = (hashtext($1)::bigint & 4294967295)) AS held`;

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

/** The job lock is gone; the message starts "lost the job lock: ". */
export class LockLost extends Error {
  constructor(readonly reason: string) {
    super(`lost the job lock: ${reason}`);
    this.name = 'LockLost';
  }
}

export interface JobLock {
  readonly hypertable: string;
  /** Backend pid of the session holding the lock. */
  readonly pid: number;
  /** Aborts (reason: a LockLost) the moment the lock is known to be lost. */
  readonly signal: AbortSignal;
  /** Null while held. */
  readonly lost: LockLost | null;
  /** Checks that the lock's session is alive and holds it; throws (and records) a LockLost if not. */
  verify(): Promise<void>;
  /**
   * Cancels the statement a backend (pid, backend_start) runs, if that backend still exists: the
   * step in flight when the lock was lost. Best effort; never throws.
   */
  cancel(backend: Backend): Promise<void>;
  /** Unlocks and closes the session (a lost lock: just closes). */
  release(): Promise<void>;
}

export interface Backend {
  pid: number;
  started: string | null;
}

/** Takes the lock on a hypertable: a JobLock, or null when another session holds it. */
export type LockSource = (hypertable: string) => Promise<JobLock | null>;

export interface LockOptions {
  /** How often the held lock is checked while a step runs (default 10 s). */
  heartbeatMs?: number;
  /** A check (or the cancel) that gets no answer by then counts as a lost session (default 10 s). */
  checkTimeoutMs?: number;
  /** Told once when the lock is lost. */
  onLost?: (err: LockLost) => void;
}

/** Who runs this session: for cancelling its statement from elsewhere. */
export async function backendOf(db: Queryable): Promise<Backend | null> {
  try {
    const r = await db.query<{ pid: number; started: string | null }>(`SELECT pg_backend_pid() AS pid, (SELECT backend_start::text FROM pg_stat_activity WHERE pid = pg_backend_pid()) AS started`);
    return r.rows[0] ? { pid: Number(r.rows[0].pid), started: r.rows[0].started ?? null } : null;
  } catch {
    return null;
  }
}

abstract class HeldLock implements JobLock {
  readonly signal: AbortSignal;
  lost: LockLost | null = null;
  protected released = false;
  private readonly controller = new AbortController();
  private timer: NodeJS.Timeout | null = null;
  private checking: Promise<void> | null = null;

  constructor(
    readonly hypertable: string,
    readonly pid: number,
    protected readonly o: LockOptions,
  ) {
    this.signal = this.controller.signal;
    const every = o.heartbeatMs ?? 10_000;
    if (every > 0) {
      this.timer = setInterval(() => void this.verify().catch(() => {}), every);
      this.timer.unref();
    }
  }

  protected lose(reason: string): LockLost {
    if (this.lost || this.released) return this.lost ?? new LockLost(reason);
    this.lost = new LockLost(reason);
    this.stopTimer();
    this.controller.abort(this.lost);
    this.o.onLost?.(this.lost);
    return this.lost;
  }

  private stopTimer() {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  /** Runs HELD on the lock's session. */
  protected abstract held(): Promise<{ pid: number; standby: boolean; held: boolean }>;

  verify(): Promise<void> {
    if (this.lost) return Promise.reject(this.lost);
    if (this.released) return Promise.reject(new LockLost('released'));
    this.checking ??= (async () => {
      let r;
      try {
        r = await withDeadline(this.held(), this.o.checkTimeoutMs ?? 10_000, 'its session did not answer a check');
      } catch (err) {
        throw this.lose(`its session failed a check: ${message(err)}`);
      }
      if (Number(r.pid) !== this.pid) throw this.lose(`the connection holding it was replaced (backend ${r.pid} now, ${this.pid} took the lock)`);
      if (r.standby) throw this.lose('its server is a standby now (failover)');
      if (!r.held) throw this.lose(`backend ${this.pid} no longer holds it`);
    })().finally(() => (this.checking = null));
    return this.checking;
  }

  async cancel(_backend: Backend): Promise<void> {}

  async release(): Promise<void> {
    this.stopTimer();
    if (this.released) return;
    const wasLost = this.lost;
    this.released = true;
    await this.close(!wasLost);
  }

  protected abstract close(unlock: boolean): Promise<void>;
}

/** The lock on `db`'s own session (an embedded database, or a pool of one in tests). */
class SessionLock extends HeldLock {
  constructor(
    private readonly db: Queryable,
    hypertable: string,
    pid: number,
    o: LockOptions,
  ) {
    super(hypertable, pid, o);
  }
  protected async held() {
    return (await this.db.query<{ pid: number; standby: boolean; held: boolean }>(HELD, [this.hypertable])).rows[0]!;
  }
  protected async close(release: boolean) {
    if (release) await unlock(this.db, this.hypertable).catch(() => {});
  }
}

/** Takes the lock on `db`'s own session; verify() notices that session replaced (a pool reconnected). */
export function sessionLocks(db: Queryable, o: LockOptions = {}): LockSource {
  return async (hypertable) => {
    if (!(await tryLock(db, hypertable))) return null;
    const pid = Number((await db.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid);
    // An embedded database has one session and nothing to watch between steps.
    return new SessionLock(db, hypertable, pid, { ...o, heartbeatMs: 0 });
  };
}

/** The lock on a dedicated connection to `url`, opened for each run and closed after it. */
class ConnectionLock extends HeldLock {
  constructor(
    private readonly client: pg.Client,
    private readonly url: string,
    hypertable: string,
    pid: number,
    o: LockOptions,
  ) {
    super(hypertable, pid, o);
    client.on('error', (err) => void this.lose(`its connection failed: ${message(err)}`));
    client.on('end', () => void this.lose('its connection closed'));
  }
  protected async held() {
    return (await this.client.query<{ pid: number; standby: boolean; held: boolean }>(HELD, [this.hypertable])).rows[0]!;
  }
  override async cancel(backend: Backend): Promise<void> {
    // The lock's own connection is gone: a short-lived one (to whichever server the URL reaches now).
    // Only the very backend that ran the step is cancelled: pid and start time both match.
    const c = new pg.Client({ ...pgConnection(this.url), application_name: 'strata-job-lock', connectionTimeoutMillis: this.o.checkTimeoutMs ?? 10_000, query_timeout: this.o.checkTimeoutMs ?? 10_000 });
    c.on('error', () => {});
    try {
      await c.connect();
      await c.query(`SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE pid = $1 AND backend_start::text IS NOT DISTINCT FROM $2`, [backend.pid, backend.started]);
    } catch {
      // the server is unreachable: the step's connection fails on its own
    } finally {
      await c.end().catch(() => {});
    }
  }
  protected async close(release: boolean) {
    try {
      if (release) await withDeadline(this.client.query(`SELECT pg_advisory_unlock_all()`), this.o.checkTimeoutMs ?? 10_000, 'unlock timed out');
    } catch {
      // closing the session releases it anyway
    }
    await withDeadline(this.client.end(), 5_000, 'close timed out').catch(() => {});
  }
}

/** Session locks on a dedicated connection to `url` (a direct one to the primary, not through PgBouncer). */
export function connectionLocks(url: string, o: LockOptions = {}): LockSource {
  return async (hypertable) => {
    const timeout = o.checkTimeoutMs ?? 10_000;
    const client = new pg.Client({ ...pgConnection(url), application_name: 'strata-job-lock', keepAlive: true, connectionTimeoutMillis: timeout, query_timeout: timeout });
    let onError: ((err: Error) => void) | null = () => {};
    client.on('error', onError);
    try {
      await client.connect();
      const r = (await client.query<{ ok: boolean; pid: number; standby: boolean }>(`SELECT pg_try_advisory_lock(${KEY}) AS ok, pg_backend_pid() AS pid, pg_is_in_recovery() AS standby`, [hypertable])).rows[0]!;
      if (r.standby) throw new Error('the job lock\'s connection reached a standby (pg_is_in_recovery()); point STRATA_ADMIN_DATABASE_URL at the primary');
      if (!r.ok) {
        await client.end().catch(() => {});
        return null;
      }
      const lock = new ConnectionLock(client, url, hypertable, Number(r.pid), o);
      client.off('error', onError);
      onError = null;
      return lock;
    } catch (err) {
      await client.end().catch(() => {});
      throw err;
    }
  };
}

/**
 * The lock source for a database URL: a dedicated connection on a server, the database's own session
 * on an embedded (pglite:) one.
 */
export function jobLocks(url: string | undefined, db: Queryable, o: LockOptions = {}): LockSource {
  return url && !url.startsWith('pglite:') ? connectionLocks(url, o) : sessionLocks(db, o);
}

const message = errorText;

function withDeadline<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what} within ${ms} ms`)), ms)));
  return Promise.race([p, deadline]).finally(() => clearTimeout(timer));
}
