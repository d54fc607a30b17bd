// The S3 side of the archive, over the AWS SDK: multipart upload with SHA-256 part checksums
// (@aws-sdk/lib-storage), head, download, RestoreObject, delete and lifecycle rules.
// Checksums are sent because each upload asks for SHA-256 (ChecksumAlgorithm), not by the SDK's
// default CRC calculation, which S3-compatible servers such as s3rver mishandle for streamed bodies.
import { createReadStream } from 'node:fs';
import type { Readable } from 'node:stream';
import {
  AbortMultipartUploadCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  PutBucketLifecycleConfigurationCommand,
  RestoreObjectCommand,
  S3Client,
  type LifecycleRule,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import type { ArchiveSettings } from './settings.ts';
import type { ObjectLockMode, RestoreTier, StorageClass } from './types.ts';

export const PART_BYTES = 16 * 1024 * 1024;

export interface Head {
  bytes: number;
  etag: string | null;
  versionId: string | null;
  storageClass: StorageClass;
  /** As S3 reports it: base64, with "-<parts>" for a multipart object. Absent on servers without checksums. */
  checksumSha256: string | null;
  /** The x-amz-restore header: absent, ongoing-request="true", or ongoing-request="false", expiry-date="…". */
  restore: string | null;
  metadata: Record<string, string>;
}

export interface UploadResult {
  etag: string | null;
  versionId: string | null;
  checksumSha256: string | null;
}

export class ArchiveStore {
  readonly client: S3Client;
  constructor(readonly settings: ArchiveSettings) {
    this.client = new S3Client({
      region: settings.region,
      ...(settings.endpoint ? { endpoint: settings.endpoint, forcePathStyle: true } : {}),
      ...(settings.credentials ? { credentials: settings.credentials } : {}),
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
      maxAttempts: 3,
    });
  }

  get bucket(): string {
    return this.settings.bucket;
  }

  async upload(
    key: string,
    file: string,
    bytes: number,
    o: { storageClass: StorageClass; metadata: Record<string, string>; lock?: { mode: ObjectLockMode; until: Date } | null; onProgress?: (loaded: number) => void },
  ): Promise<UploadResult> {
    const upload = new Upload({
      client: this.client,
      partSize: PART_BYTES,
      queueSize: 2,
      // Parts are aborted below, so the upload's own error is the one reported.
      leavePartsOnError: true,
      params: {
        Bucket: this.bucket,
        Key: key,
        Body: createReadStream(file),
        ContentLength: bytes,
        ContentType: 'application/gzip',
        StorageClass: o.storageClass,
        ChecksumAlgorithm: 'SHA256',
        Metadata: o.metadata,
        ...(o.lock ? { ObjectLockMode: o.lock.mode, ObjectLockRetainUntilDate: o.lock.until } : {}),
      },
    });
    upload.on('httpUploadProgress', (p) => o.onProgress?.(p.loaded ?? 0));
    try {
      const r = await upload.done();
      return { etag: r.ETag ?? null, versionId: r.VersionId ?? null, checksumSha256: r.ChecksumSHA256 ?? null };
    } catch (err) {
      await this.abortUploads(key);
      throw err;
    }
  }

  /** Aborts unfinished multipart uploads of a key (best effort: some servers lack the listing). */
  async abortUploads(key: string): Promise<number> {
    try {
      const r = await this.client.send(new ListMultipartUploadsCommand({ Bucket: this.bucket, Prefix: key }));
      let n = 0;
      for (const u of r.Uploads ?? []) {
        if (u.Key !== key || !u.UploadId) continue;
        await this.client.send(new AbortMultipartUploadCommand({ Bucket: this.bucket, Key: key, UploadId: u.UploadId }));
        n++;
      }
      return n;
    } catch {
      return 0; // the bucket's lifecycle rule (AbortIncompleteMultipartUpload) removes what is left
    }
  }

  /** The object's metadata, or null when there is none at the key. */
  async head(key: string): Promise<Head | null> {
    try {
      const r = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: key, ChecksumMode: 'ENABLED' }));
      return {
        bytes: r.ContentLength ?? 0,
        etag: r.ETag ?? null,
        versionId: r.VersionId ?? null,
        storageClass: (r.StorageClass ?? 'STANDARD') as StorageClass,
        checksumSha256: r.ChecksumSHA256 ?? null,
        restore: r.Restore ?? null,
        metadata: r.Metadata ?? {},
      };
    } catch (err) {
      if ((err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode === 404) return null;
      throw err;
    }
  }

  async download(key: string, versionId?: string | null): Promise<Readable> {
    const r = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: key, ...(versionId ? { VersionId: versionId } : {}) }));
    return r.Body as Readable;
  }

  async requestRestore(key: string, versionId: string | null, days: number, tier: RestoreTier): Promise<void> {
    await this.client.send(
      new RestoreObjectCommand({ Bucket: this.bucket, Key: key, ...(versionId ? { VersionId: versionId } : {}), RestoreRequest: { Days: days, GlacierJobParameters: { Tier: tier } } }),
    );
  }

  async delete(key: string, versionId?: string | null): Promise<void> {
    await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: key, ...(versionId ? { VersionId: versionId } : {}) }));
  }

  async putLifecycle(rules: LifecycleRule[]): Promise<void> {
    await this.client.send(new PutBucketLifecycleConfigurationCommand({ Bucket: this.bucket, LifecycleConfiguration: { Rules: rules } }));
  }

  close(): void {
    this.client.destroy();
  }
}

/** State of a Glacier restore from x-amz-restore. */
export function restoreState(head: Head): 'none' | 'in-progress' | 'ready' {
  if (!head.restore) return 'none';
  return /ongoing-request\s*=\s*"true"/.test(head.restore) ? 'in-progress' : 'ready';
}
