// A real S3 API server (s3rver) on loopback for the archive tests, with one bucket per region.
import { mkdtempSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ListObjectsCommand, S3Client } from '@aws-sdk/client-s3';
import S3rver from 's3rver';

export const S3_CREDENTIALS = { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' };

export interface LocalS3 {
  endpoint: string;
  port: number;
  directory: string;
  client: S3Client;
  /** Keys in a bucket (one unpaginated listing: s3rver's continuation tokens fail on Node 20). */
  keys(bucket: string): Promise<string[]>;
  stop(): Promise<void>;
}

export async function startS3(buckets: string[], o: { directory?: string; port?: number } = {}): Promise<LocalS3> {
  const directory = o.directory ?? mkdtempSync(join(tmpdir(), 'strata-s3-'));
  const server = new S3rver({ address: '127.0.0.1', port: o.port ?? 0, directory, silent: true, resetOnClose: false, configureBuckets: buckets.map((name) => ({ name, configs: [] })) });
  const { port } = (await server.run()) as AddressInfo;
  const endpoint = `http://127.0.0.1:${port}`;
  const client = new S3Client({ endpoint, region: 'test-1', forcePathStyle: true, credentials: S3_CREDENTIALS, requestChecksumCalculation: 'WHEN_REQUIRED', responseChecksumValidation: 'WHEN_REQUIRED' });
  return {
    endpoint,
    port,
    directory,
    client,
    async keys(bucket) {
      const r = await client.send(new ListObjectsCommand({ Bucket: bucket, MaxKeys: 1000 }));
      return (r.Contents ?? []).map((c) => c.Key!).sort();
    },
    async stop() {
      client.destroy();
      await server.close();
    },
  };
}
