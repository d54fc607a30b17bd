// The archive's settings, from configuration: this region's bucket (one bucket per region; a region
// without one cannot archive), key prefix, storage class, Object Lock, retention and restore options.
import { tmpdir } from 'node:os';
import type { Config } from '../../config.ts';
import { ConfigError } from '../../errors.ts';
import type { ObjectLockMode, RestoreTier, StorageClass } from './types.ts';

export interface ArchiveSettings {
  region: string;
  bucket: string;
  prefix: string;
  storageClass: StorageClass;
  objectLock: ObjectLockMode | null;
  /** A PostgreSQL interval: objects are kept this long after they were archived. */
  retention: string;
  restoreTier: RestoreTier;
  restoreDays: number;
  workDir: string;
  /** An S3-compatible endpoint (path-style addressing); AWS's own when unset. */
  endpoint?: string;
  /** Explicit credentials (strata dev's local server); otherwise the AWS SDK's default chain. */
  credentials?: { accessKeyId: string; secretAccessKey: string };
}

/** region → bucket from "eu-west-1=strata-eu,us-east-1=strata-us". */
export function parseBuckets(text: string): Map<string, string> {
  const map = new Map<string, string>();
  for (const pair of text.split(',')) {
    const [region, bucket] = pair.split('=').map((s) => s.trim());
    if (region && bucket) map.set(region, bucket);
  }
  return map;
}

export function archiveSettings(config: Config): ArchiveSettings {
  const problems: string[] = [];
  if (!config.region) problems.push('STRATA_REGION: required for the archive (objects are written to the region\'s own bucket)');
  if (!config.archiveBuckets) problems.push('STRATA_ARCHIVE_BUCKETS: required for the archive, such as "eu-west-1=strata-archive-eu"');
  const bucket = config.region && config.archiveBuckets ? parseBuckets(config.archiveBuckets).get(config.region) : undefined;
  if (config.region && config.archiveBuckets && !bucket) problems.push(`STRATA_ARCHIVE_BUCKETS: names no bucket for this region (STRATA_REGION="${config.region}"); a region's data is only written to its own bucket`);
  if (problems.length) throw new ConfigError(problems);
  return {
    region: config.region!,
    bucket: bucket!,
    prefix: config.archivePrefix,
    storageClass: config.archiveStorageClass,
    objectLock: config.archiveObjectLock === 'off' ? null : config.archiveObjectLock,
    retention: config.archiveRetention,
    restoreTier: config.archiveRestoreTier,
    restoreDays: config.archiveRestoreDays,
    workDir: config.archiveWorkDir ?? tmpdir(),
    ...(config.s3Endpoint ? { endpoint: config.s3Endpoint } : {}),
  };
}
