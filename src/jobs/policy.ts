// The tier policy: ages and tablespaces from configuration, and the instants they give at a moment.
// Ages are PostgreSQL intervals ("30 days", "18 months"); the boundaries are computed by the
// database (now() - interval), so month arithmetic and the clock are the server's.
import { z } from 'zod';
import { AGE, HOURS_OR_DAYS, TIER_DEFAULTS, age } from '../config.ts';
import { IDENTIFIER } from '../patterns.ts';
import type { Queryable } from '../db/port.ts';
import { ConfigError } from '../errors.ts';
import type { Boundaries } from './types.ts';

const HOURS_OR_DAYS_TEXT = 'must be a whole number of hours or days, such as "1 day", or "off"';

/** A "N hours|days" text as a PostgreSQL interval, or null for "off". */
function unitInterval(text: string): string | null {
  const m = HOURS_OR_DAYS.exec(text);
  return m && m[1] ? `${m[1]} ${m[2]}` : null;
}

/** The merge unit in ms, or null when merging is off. */
export function mergeUnitMs(policy: TierPolicy): number | null {
  const m = HOURS_OR_DAYS.exec(policy.coldMerge);
  if (!m || !m[1]) return null;
  return Number(m[1]) * (m[2]!.toLowerCase().startsWith('hour') ? 3_600_000 : 86_400_000);
}

export const tierPolicySchema = z
  .object({
    /** Chunks whose range ended longer ago than this are warm. */
    warmAfter: age.default(TIER_DEFAULTS.tierWarmAfter),
    /** …cold after this. */
    coldAfter: age.default(TIER_DEFAULTS.tierColdAfter),
    /** …and due for the archive (S3) after this. */
    archiveAfter: age.default(TIER_DEFAULTS.archiveAfter),
    /** Adjacent cold chunks within this unit ("1 day", "12 hours") are merged and recompressed; "off" never. */
    coldMerge: z.string().regex(HOURS_OR_DAYS, HOURS_OR_DAYS_TEXT).default(TIER_DEFAULTS.tierColdMerge),
    /**
     * A hot chunk written compressed (columnstore ingest) is recompressed in place, in full batches,
     * once its range ended this long ago ("off": only on its way to warm).
     */
    hotCompactAfter: z.string().regex(HOURS_OR_DAYS, HOURS_OR_DAYS_TEXT).default(TIER_DEFAULTS.tierHotCompactAfter),
    warmTablespace: z.string().regex(IDENTIFIER).default(TIER_DEFAULTS.warmTablespace),
    coldTablespace: z.string().regex(IDENTIFIER).default(TIER_DEFAULTS.coldTablespace),
  })
  .strict();

export type TierPolicy = z.infer<typeof tierPolicySchema>;

/** Roughly in days, to check the order of the ages without the database. */
function days(text: string): number {
  const m = AGE.exec(text)!;
  const n = Number(m[1]);
  const unit = m[2]!.toLowerCase();
  return unit.startsWith('day') ? n : unit.startsWith('week') ? 7 * n : unit.startsWith('month') ? 30.44 * n : 365.25 * n;
}

/** Validates a policy; the ages must grow hot < warm < cold < archive, and warm and cold need distinct tablespaces. */
export function tierPolicy(input: Partial<TierPolicy>): TierPolicy {
  const p = tierPolicySchema.parse(input);
  const problems: string[] = [];
  if (!(days(p.warmAfter) < days(p.coldAfter))) problems.push(`the cold age (${p.coldAfter}) must be longer than the warm age (${p.warmAfter})`);
  if (!(days(p.coldAfter) < days(p.archiveAfter))) problems.push(`the archive age (${p.archiveAfter}) must be longer than the cold age (${p.coldAfter})`);
  if (p.warmTablespace === p.coldTablespace) problems.push(`the warm and cold tablespaces must differ (both are "${p.warmTablespace}")`);
  if (problems.length) throw new RangeError(`tier policy: ${problems.join('; ')}`);
  return p;
}

/** The boundaries now, by the database's clock (or at `at`, for a plan of the future or a test). */
export async function boundaries(db: Queryable, policy: TierPolicy, at?: Date): Promise<Boundaries> {
  const r = await db.query<{ warm: Date; cold: Date; archive: Date; compact: Date | null }>(
    `SELECT t - $1::interval AS warm, t - $2::interval AS cold, t - $3::interval AS archive, t - $5::interval AS compact
       FROM (SELECT coalesce($4::timestamptz, now()) AS t) n`,
    [policy.warmAfter, policy.coldAfter, policy.archiveAfter, at ?? null, unitInterval(policy.hotCompactAfter)],
  );
  return r.rows[0]!;
}

/** The policy the configuration names (STRATA_TIER_*, STRATA_ARCHIVE_AFTER, STRATA_WARM/COLD_TABLESPACE). */
export function policyFromConfig(c: { tierWarmAfter: string; tierColdAfter: string; archiveAfter: string; tierColdMerge?: string; tierHotCompactAfter?: string; warmTablespace?: string | undefined; coldTablespace?: string | undefined }): TierPolicy {
  try {
    return fromConfig(c);
  } catch (err) {
    throw new ConfigError([`STRATA_TIER_WARM_AFTER, STRATA_TIER_COLD_AFTER, STRATA_ARCHIVE_AFTER, STRATA_TIER_COLD_MERGE, STRATA_TIER_HOT_COMPACT_AFTER, STRATA_WARM_TABLESPACE, STRATA_COLD_TABLESPACE: ${(err as Error).message}`]);
  }
}

function fromConfig(c: Parameters<typeof policyFromConfig>[0]): TierPolicy {
  return tierPolicy({
    warmAfter: c.tierWarmAfter,
    coldAfter: c.tierColdAfter,
    archiveAfter: c.archiveAfter,
    ...(c.tierColdMerge ? { coldMerge: c.tierColdMerge } : {}),
    ...(c.tierHotCompactAfter ? { hotCompactAfter: c.tierHotCompactAfter } : {}),
    ...(c.warmTablespace ? { warmTablespace: c.warmTablespace } : {}),
    ...(c.coldTablespace ? { coldTablespace: c.coldTablespace } : {}),
  });
}
