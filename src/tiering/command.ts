// `strata tier plan|run`: argument parsing and output (a table, or --json). The work is in plan.ts and job.ts.
import { parseArgs } from 'node:util';
import type { Config } from '../config.ts';
import type { Db } from '../db/port.ts';
import { UsageError } from '../errors.ts';
import { jobLocks, type LockSource } from '../jobs/lock.ts';
import type { Logger } from '../log.ts';
import { stopOnSignals } from '../signals.ts';
import { bytes, parseDuration } from '../units.ts';
import { racingPolicyWarnings, readChunks } from '../jobs/chunks.ts';
import { runTiering, type RunSummary } from './job.ts';
import { plan, type Plan } from './plan.ts';
import { boundaries, policyFromConfig } from '../jobs/policy.ts';
import { describeStep } from './steps.ts';
import { parseWindow } from './window.ts';

const USAGE = `usage: strata tier plan [--at <timestamp>] [--json]
       strata tier run [--max-chunks <n>] [--max-duration <e.g. 30m>] [--window HH:MM-HH:MM] [--no-verify] [--json]`;

const day = (d: Date) => d.toISOString().slice(0, 16).replace('T', ' ');

function planState(c: Plan['chunks'][number]['chunk']): string {
  const where = c.tablespace ?? 'default';
  if (!c.compressed) return `${where}, uncompressed`;
  const inner = c.compressedTablespace ?? 'default';
  return inner === where ? `${where}, compressed` : `${where}, compressed (data in ${inner})`;
}

export function formatPlan(p: Plan, warnings: string[]): string {
  const rows = [['CHUNK', 'RANGE (UTC)', 'SIZE', 'TIER', 'STATE', 'STEPS']];
  for (const c of p.chunks) {
    rows.push([
      c.chunk.chunk.replace(/^_timescaledb_internal\./, ''),
      `${day(c.chunk.rangeStart)} → ${day(c.chunk.rangeEnd)}`,
      bytes(c.chunk.bytes),
      c.current === c.target ? c.current : `${c.current} → ${c.target}`,
      planState(c.chunk) + (c.archiveDue ? '; archive due' : ''),
      c.steps.length ? c.steps.map(describeStep).join(', ') : '-',
    ]);
  }
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  const t = p.totals;
  return [
    `boundaries: warm ≤ ${day(p.boundaries.warm)}, cold ≤ ${day(p.boundaries.cold)}, archive ≤ ${day(p.boundaries.archive)} (a chunk belongs to a tier once its range ends by then); hot compaction ${p.boundaries.compact ? `≤ ${day(p.boundaries.compact)}` : 'off'}`,
    '',
    ...rows.map((r) => r.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd()),
    '',
    `${t.chunks} chunks: hot ${t.byTier.hot.chunks} (${bytes(t.byTier.hot.bytes)}), warm ${t.byTier.warm.chunks} (${bytes(t.byTier.warm.bytes)}), cold ${t.byTier.cold.chunks} (${bytes(t.byTier.cold.bytes)})`,
    `${t.steps} steps on ${t.chunksWithSteps} chunks; ${bytes(t.bytesToMove)} to move; expected savings ${t.compressionRatio ? `${bytes(t.expectedSavings)} (at the ${t.compressionRatio.toFixed(1)}:1 reached so far)` : 'unknown (no chunk compressed yet)'}`,
    ...p.merges.map((m) => `merge: ${m.chunks.length} cold chunks ${day(m.rangeStart)} → ${day(m.rangeEnd)} (${bytes(m.bytes)}) into one, then recompress`),
    ...(t.archiveDue ? [`${t.archiveDue} chunks are due for the archive (strata archive run)`] : []),
    ...warnings.map((w) => `warning: ${w}`),
  ].join('\n');
}

export function formatSummary(s: RunSummary): string {
  const stop: Record<RunSummary['stopped'], string> = {
    done: 'every planned chunk was handled',
    'max-chunks': 'stopped at --max-chunks',
    'max-duration': 'stopped at --max-duration',
    window: 'outside (or at the end of) the maintenance window',
    locked: 'another worker holds the lock on this hypertable; nothing done',
    'lock-lost': `lost the job lock (${s.stoppedBy ?? 'its session ended'}); stopped at once, the next run continues from the catalog`,
    stopped: `stopped by ${s.stoppedBy ?? 'a signal'} after step ${s.stepsDone + s.stepsFailed} of ${s.stepsPlanned}; the next run continues from the catalog`,
  };
  return [
    `tiering run ${s.runId}: ${stop[s.stopped]}`,
    `${s.chunksDone} of ${s.chunksPlanned} chunks reached their tier, ${s.chunksFailed} failed; ${s.mergesDone} of ${s.mergesPlanned} cold merges; ${s.stepsDone} steps done, ${s.stepsFailed} failed; ${bytes(s.bytesBefore)} → ${bytes(s.bytesAfter)} on the chunks done; ${s.seconds.toFixed(1)} s`,
    ...(s.interruptedSteps ? [`${s.interruptedSteps} steps of an earlier, interrupted run were marked failed and redone from the catalog`] : []),
    ...s.failures.map((f) => `failed: ${f.chunk} ${f.step}: ${f.error}`),
  ].join('\n');
}

export interface TierCommandDeps {
  /** Where the job lock is taken (default: a dedicated connection to STRATA_ADMIN_DATABASE_URL; the embedded database's own session). */
  locks?: LockSource;
  /** Stops the run after its current step (default: SIGTERM/SIGINT). */
  signal?: AbortSignal;
}

export async function tierCommand(args: string[], config: Config, log: Logger, db: Db, out: (t: string) => void, deps: TierCommandDeps = {}): Promise<number> {
  const [sub, ...rest] = args;
  const policy = policyFromConfig(config);
  if (sub === 'plan') {
    const { values } = parseArgs({ args: rest, options: { json: { type: 'boolean' }, at: { type: 'string' } } });
    const at = values.at === undefined ? undefined : new Date(values.at);
    if (at && Number.isNaN(at.getTime())) throw new UsageError(`strata tier plan: --at "${values.at}" is not a timestamp (use ISO 8601, such as 2026-12-01T00:00:00Z)`);
    const p = plan(await readChunks(db), await boundaries(db, policy, at), policy);
    const warn = await racingPolicyWarnings(db);
    out(values.json ? JSON.stringify({ ...p, warnings: warn }, null, 2) : formatPlan(p, warn));
    return 0;
  }
  if (sub === 'run') {
    const { values } = parseArgs({
      args: rest,
      options: { 'max-chunks': { type: 'string' }, 'max-duration': { type: 'string' }, window: { type: 'string' }, 'no-verify': { type: 'boolean' }, json: { type: 'boolean' } },
    });
    const maxChunks = values['max-chunks'] === undefined ? undefined : Number(values['max-chunks']);
    if (maxChunks !== undefined && !(Number.isInteger(maxChunks) && maxChunks > 0)) throw new UsageError(`strata tier run: --max-chunks "${values['max-chunks']}" must be a whole number above 0`);
    const maxDurationMs = values['max-duration'] === undefined ? undefined : parseDuration(values['max-duration']);
    if (maxDurationMs === null || maxDurationMs === 0) throw new UsageError(`strata tier run: --max-duration "${values['max-duration']}" must be a duration such as 90s, 30m, 2h or 1h30m`);
    const windowText = values.window ?? config.tierWindow;
    let window;
    try {
      window = windowText ? parseWindow(windowText) : undefined;
    } catch (err) {
      throw new UsageError(`strata tier run: ${(err as Error).message}`);
    }
    for (const w of await racingPolicyWarnings(db)) log.warn(w);
    // SIGTERM/SIGINT: the run stops after its current step and exits 0; a second signal exits at once.
    const signals = deps.signal ? null : stopOnSignals({ log, what: 'the tiering run stops after its current step' });
    let s: RunSummary;
    try {
      s = await runTiering(db, log, {
        policy,
        ...(maxChunks ? { maxChunks } : {}),
        ...(maxDurationMs ? { maxDurationMs } : {}),
        ...(window ? { window } : {}),
        verify: !values['no-verify'],
        lockTimeoutMs: config.tierLockTimeoutMs,
        locks: deps.locks ?? jobLocks(config.adminDatabaseUrl, db),
        signal: deps.signal ?? signals!.signal,
      });
    } finally {
      signals?.dispose();
    }
    out(values.json ? JSON.stringify(s, null, 2) : formatSummary(s));
    return s.stopped === 'lock-lost' || s.stepsFailed > 0 || s.failures.length > 0 ? 1 : 0;
  }
  throw new UsageError(`strata tier: unknown subcommand ${sub ? `"${sub}"` : '(none)'}\n${USAGE}`);
}
