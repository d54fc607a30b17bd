// A step's statement under lock_timeout, retried with backoff: a step that cannot get its lock gives
// up within the timeout instead of waiting in the lock queue, where writes into the same relation
// would queue behind it; it tries again later, after the writer that held the lock has committed.
import { setTimeout as sleep } from 'node:timers/promises';
import type { Queryable } from '../db/port.ts';
import { sqlState } from '../errors.ts';
import type { Logger } from '../log.ts';

export const LOCK_NOT_AVAILABLE = '55P03';

export interface LockTimeoutOptions {
  timeoutMs: number;
  /** Attempts in all (default 5); the last one's lock error is thrown. */
  attempts?: number;
  /** First backoff (default 1 s); it doubles per attempt, with jitter, up to 30 s. */
  backoffMs?: number;
  /** Called before each attempt (1-based), e.g. to journal it. */
  onAttempt?: (attempt: number) => Promise<void>;
  log?: Logger;
}

export async function withLockTimeout<T>(db: Queryable, o: LockTimeoutOptions, fn: () => Promise<T>): Promise<T> {
  const attempts = o.attempts ?? 5;
  const base = o.backoffMs ?? 1_000;
  for (let attempt = 1; ; attempt++) {
    await o.onAttempt?.(attempt);
    await db.query(`SELECT set_config('lock_timeout', $1, false)`, [`${o.timeoutMs}ms`]);
    try {
      return await fn();
    } catch (err) {
      if (sqlState(err) !== LOCK_NOT_AVAILABLE || attempt >= attempts) throw err;
      o.log?.warn('step could not get its lock in time; retrying', { attempt, attempts, error: err });
      await sleep(Math.min(30_000, base * 2 ** (attempt - 1) * (0.5 + Math.random() / 2)));
    } finally {
      await db.exec('RESET lock_timeout').catch(() => {});
    }
  }
}
