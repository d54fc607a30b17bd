// The step journal shared by the tiering and archive jobs (strata.job_journal): every step is
// recorded pending → running → done | failed | skipped, with its error text and timings (DESIGN §4).
// The journal is a record for operators; what a step still has to do is always decided from the
// catalog, never from the journal alone. Imports only db/.
import type { Queryable } from '../db/port.ts';

export type JobKind = 'tiering' | 'archive' | 'restore' | 'expire';
export type StepState = 'pending' | 'running' | 'done' | 'failed' | 'skipped';

export interface JournalEntry {
  id: number;
  job: JobKind;
  runId: string;
  hypertable: string;
  chunk: string;
  step: string;
  state: StepState;
  attempt: number;
  error: string | null;
  detail: Record<string, unknown>;
  createdAt: Date;
  startedAt: Date | null;
  finishedAt: Date | null;
}

export class Journal {
  constructor(
    private readonly db: Queryable,
    readonly job: JobKind,
    readonly runId: string,
    readonly hypertable: string,
  ) {}

  /** Records a planned step; returns its id. */
  async pending(chunk: string, step: string, detail: Record<string, unknown> = {}): Promise<number> {
    const r = await this.db.query<{ id: number }>(
      `INSERT INTO strata.job_journal (job, run_id, hypertable, chunk, step, state, detail) VALUES ($1, $2, $3, $4, $5, 'pending', $6) RETURNING id`,
      [this.job, this.runId, this.hypertable, chunk, step, JSON.stringify(detail)],
    );
    return Number(r.rows[0]!.id);
  }

  async running(id: number, attempt = 1): Promise<void> {
    await this.db.query(`UPDATE strata.job_journal SET state = 'running', attempt = $2, started_at = coalesce(started_at, clock_timestamp()) WHERE id = $1`, [id, attempt]);
  }

  async finish(id: number, state: 'done' | 'failed' | 'skipped', error?: string, detail: Record<string, unknown> = {}): Promise<void> {
    await this.db.query(
      `UPDATE strata.job_journal SET state = $2, error = $3, detail = detail || $4::jsonb, finished_at = clock_timestamp() WHERE id = $1`,
      [id, state, error ?? null, JSON.stringify(detail)],
    );
  }

  /**
   * Steps of earlier runs of this job on this hypertable left pending or running: their worker
   * stopped (crash, kill, lost connection). Call only while holding the job's lock, so no live
   * worker owns them. They are marked failed with the reason; returns how many.
   */
  async reconcileInterrupted(): Promise<number> {
    const r = await this.db.query(
      `UPDATE strata.job_journal SET state = 'failed', finished_at = clock_timestamp(),
              error = 'interrupted: the worker stopped before this step finished; the next run re-read the catalog and continued'
        WHERE job = $1 AND hypertable = $2 AND run_id <> $3 AND state IN ('pending', 'running')`,
      [this.job, this.hypertable, this.runId],
    );
    return r.rowCount;
  }
}

export async function readJournal(db: Queryable, filter: { job?: JobKind; runId?: string; chunk?: string } = {}): Promise<JournalEntry[]> {
  const r = await db.query<Record<string, unknown>>(
    `SELECT id, job, run_id, hypertable, chunk, step, state, attempt, error, detail, created_at, started_at, finished_at
       FROM strata.job_journal
      WHERE ($1::text IS NULL OR job = $1) AND ($2::uuid IS NULL OR run_id = $2) AND ($3::text IS NULL OR chunk = $3)
      ORDER BY id`,
    [filter.job ?? null, filter.runId ?? null, filter.chunk ?? null],
  );
  return r.rows.map((x) => ({
    id: Number(x.id),
    job: x.job as JobKind,
    runId: x.run_id as string,
    hypertable: x.hypertable as string,
    chunk: x.chunk as string,
    step: x.step as string,
    state: x.state as StepState,
    attempt: x.attempt as number,
    error: (x.error as string | null) ?? null,
    detail: x.detail as Record<string, unknown>,
    createdAt: x.created_at as Date,
    startedAt: (x.started_at as Date | null) ?? null,
    finishedAt: (x.finished_at as Date | null) ?? null,
  }));
}
