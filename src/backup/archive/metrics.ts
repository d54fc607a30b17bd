// The archive's Prometheus metrics: bytes and rows archived, step durations and failures, restore
// requests, and the time of the last successful run.
import { Counter, Gauge, type Registry } from 'prom-client';
import { stepSecondsHistogram } from '../../jobs/metrics.ts';

export function createArchiveMetrics(registry: Registry) {
  return {
    bytes: new Counter({ name: 'strata_archive_bytes_total', help: 'Bytes uploaded to the archive (tar.gz objects)', registers: [registry] }),
    rows: new Counter({ name: 'strata_archive_rows_total', help: 'Rows archived (in objects verified and dropped from the database)', registers: [registry] }),
    chunks: new Counter({ name: 'strata_archive_chunks_total', help: 'Chunks archived and dropped from the database', registers: [registry] }),
    stepSeconds: stepSecondsHistogram(registry, 'strata_archive_step_seconds', 'Duration of archive steps, by step'),
    failures: new Counter({ name: 'strata_archive_step_failures_total', help: 'Archive and restore steps that failed, by step', labelNames: ['step'], registers: [registry] }),
    restoreRequests: new Counter({ name: 'strata_archive_restore_requests_total', help: 'RestoreObject requests sent for Glacier objects', registers: [registry] }),
    lastSuccess: new Gauge({ name: 'strata_archive_last_success_timestamp_seconds', help: 'Unix time of the end of the last archive run without failures', registers: [registry] }),
  };
}

export type ArchiveMetrics = ReturnType<typeof createArchiveMetrics>;
