// The tiering worker's Prometheus metrics: chunks and bytes per tier, compression ratio per tier,
// step durations and failures, and the time of the last successful run.
import { Counter, Gauge, type Registry } from 'prom-client';
import { stepSecondsHistogram } from '../jobs/metrics.ts';
import { compressionRatio, type Plan } from './plan.ts';

export function createTierMetrics(registry: Registry) {
  const chunks = new Gauge({ name: 'strata_tier_chunks', help: 'Chunks per tier (where they are now)', labelNames: ['tier'], registers: [registry] });
  const bytes = new Gauge({ name: 'strata_tier_bytes', help: 'Bytes on disk per tier', labelNames: ['tier'], registers: [registry] });
  const ratio = new Gauge({ name: 'strata_tier_compression_ratio', help: 'Bytes before ÷ after compression of the compressed chunks per tier', labelNames: ['tier'], registers: [registry] });
  const pending = new Gauge({ name: 'strata_tier_steps_pending', help: 'Steps the current plan still needs', registers: [registry] });
  return {
    stepSeconds: stepSecondsHistogram(registry, 'strata_tier_step_seconds', 'Duration of tiering steps, by step'),
    stepFailures: new Counter({ name: 'strata_tier_step_failures_total', help: 'Tiering steps that failed, by step', labelNames: ['step'], registers: [registry] }),
    lastSuccess: new Gauge({ name: 'strata_tier_last_success_timestamp_seconds', help: 'Unix time of the end of the last tiering run without failures', registers: [registry] }),
    observePlan(p: Plan) {
      pending.set(p.totals.steps);
      for (const tier of ['hot', 'warm', 'cold'] as const) {
        chunks.set({ tier }, p.totals.byTier[tier].chunks);
        bytes.set({ tier }, p.totals.byTier[tier].bytes);
        const r = compressionRatio(p.chunks.filter((c) => c.current === tier).map((c) => c.chunk));
        if (r !== null) ratio.set({ tier }, r);
      }
    },
  };
}

export type TierMetrics = ReturnType<typeof createTierMetrics>;
